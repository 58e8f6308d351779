package masking

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/keyholehq/keyhole/config"
)

// customers returns a JSON array of n customer objects, the same for the same n.
func customers(n int) []byte {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	first := []string{"Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Zoë", "Ørjan"}
	last := []string{"Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Tanaka", "Kowalski", "O'Brien"}
	tiers := []string{"gold", "silver", "bronze"}
	notes := []string{
		"Prefers e-mail contact.",
		"Shipment delayed, resolved.",
		"VIP since 2019.",
		"New billing address.",
		"Duplicate charge, refunded.",
	}
	card := func() string {
		// A Luhn-valid 16-digit number starting with 4.
		d := make([]byte, 16)
		d[0] = '4'
		for i := 1; i < 15; i++ {
			d[i] = byte('0' + rng.IntN(10))
		}
		for c := byte('0'); c <= '9'; c++ {
			d[15] = c
			if luhn(d) {
				break
			}
		}
		return string(d)
	}
	var b bytes.Buffer
	b.WriteString("[")
	for i := range n {
		if i > 0 {
			b.WriteString(",\n ")
		}
		f, l := first[rng.IntN(len(first))], last[rng.IntN(len(last))]
		fmt.Fprintf(&b, `{"id":%d,"name":%q,"email":"%s.%s%d@example.com","ssn":"%03d-%02d-%04d",`+
			`"phone":"+1 212 555 %04d","tier":%q,"payment":{"card_number":%q},`+
			`"cards":[{"number":%q}],"notes":%q,"tags":["b2b"]}`,
			i, f+" "+l, strings.ToLower(f), strings.ToLower(l), i, 1+rng.IntN(665), 1+rng.IntN(99), 1+rng.IntN(9999),
			rng.IntN(10000), tiers[rng.IntN(3)], card(), card(), notes[rng.IntN(len(notes))])
	}
	b.WriteString("\n]\n")
	return b.Bytes()
}

// benchRules are the five field paths of the 1 MB benchmark: top-level array, a nested
// '#', a filter.
var benchRules = []config.MaskRule{
	{Field: "#.ssn", Action: "redact"},
	{Field: "#.payment.card_number", Action: "last4"},
	{Field: "#.cards.#.number", Action: "last4"},
	{Field: `#(tier=="gold")#.notes`, Action: "redact"},
	{Field: "#.email", Action: "hash"},
}

var allDetectors = []string{"credit_card", "us_ssn", "email", "phone", "iban", "bearer_token", "aws_access_key", "private_key"}

func benchApply(b *testing.B, rules []config.MaskRule, detect []string, body []byte) {
	m, err := New(rules, detect, Options{HashKey: []byte("0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	out, _, err := m.Apply(nil, body)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		out, _, err = m.Apply(out[:0], body)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply1MB: 4,000 customers (~1 MB), five paths. Target: at least 200 MB/s.
func BenchmarkApply1MB(b *testing.B) {
	benchApply(b, benchRules, nil, customers(4000))
}

// BenchmarkApply1MBDetect: the same with every detector on. Target: at least 50 MB/s.
func BenchmarkApply1MBDetect(b *testing.B) {
	benchApply(b, benchRules, allDetectors, customers(4000))
}

// BenchmarkApply1MBNewOutput is BenchmarkApply1MB with a fresh output buffer each time,
// as a caller that does not reuse buffers sees it.
func BenchmarkApply1MBNewOutput(b *testing.B) {
	body := customers(4000)
	m, err := New(benchRules, nil, Options{HashKey: []byte("0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := m.Apply(nil, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidOnly is the floor: a Masker without rules only validates and copies.
func BenchmarkValidOnly1MB(b *testing.B) {
	benchApply(b, nil, nil, customers(4000))
}

// BenchmarkGJSONValid1MB is gjson's validator on the same body, for reference.
func BenchmarkGJSONValid1MB(b *testing.B) {
	body := customers(4000)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if !gjson.ValidBytes(body) {
			b.Fatal("invalid")
		}
	}
}

// tenKB is a ~10 KB response: an object holding a page of customers.
func tenKB() []byte {
	return append(append([]byte(`{"page": 1, "customers": `), customers(36)...), '}')
}

// BenchmarkApply10KB: a 10 KB response, two paths. Target: at most 50 µs.
func BenchmarkApply10KB(b *testing.B) {
	benchApply(b, []config.MaskRule{
		{Field: "customers.#.ssn", Action: "redact"},
		{Field: "customers.#.payment.card_number", Action: "last4"},
	}, nil, tenKB())
}

// hundredKB is a ~100 KB array of customers.
func hundredKB() []byte { return customers(400) }

// BenchmarkApply100KB is Apply on the body of BenchmarkSJSONLoop100KB with the same
// rules, for comparison.
func BenchmarkApply100KB(b *testing.B) {
	benchApply(b, []config.MaskRule{
		{Field: "#.ssn", Action: "redact"},
		{Field: "#.payment.card_number", Action: "redact"},
		{Field: "#.cards.#.number", Action: "redact"},
	}, nil, hundredKB())
}

// BenchmarkSJSONLoop100KB is the naive way: one sjson.SetBytes per matched value,
// each of which rebuilds the document. sjson cannot set "#.ssn" (nor nested '#'), so
// the loop spells out every index.
func BenchmarkSJSONLoop100KB(b *testing.B) {
	body := hundredKB()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		doc := body
		var err error
		n := int(gjson.GetBytes(doc, "#").Int())
		for i := range n {
			p := strconv.Itoa(i)
			if doc, err = sjson.SetBytes(doc, p+".ssn", "[REDACTED]"); err != nil {
				b.Fatal(err)
			}
			if doc, err = sjson.SetBytes(doc, p+".payment.card_number", "[REDACTED]"); err != nil {
				b.Fatal(err)
			}
			for j := range int(gjson.GetBytes(doc, p+".cards.#").Int()) {
				if doc, err = sjson.SetBytes(doc, p+".cards."+strconv.Itoa(j)+".number", "[REDACTED]"); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// BenchmarkApplySmall is one small event, as in an SSE stream or NDJSON line: the fixed
// cost of a call.
func BenchmarkApplySmall(b *testing.B) {
	benchApply(b, []config.MaskRule{{Field: "result.ssn", Action: "redact"}}, allDetectors,
		[]byte(`{"jsonrpc":"2.0","id":7,"result":{"name":"Ann","ssn":"078-05-1120","note":"mail ann@example.com"}}`))
}
