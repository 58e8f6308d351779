package masking

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/config"
)

// detectCase is a string value and what it becomes with one detector on.
type detectCase struct {
	in, want string
}

func runDetect(t *testing.T, detector string, tests []detectCase) {
	t.Helper()
	m := mustNew(t, nil, detector)
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			body, _ := json.Marshal(tt.in)
			got, counts, err := m.Apply(nil, body)
			if err != nil {
				t.Fatal(err)
			}
			var s string
			if err := json.Unmarshal(got, &s); err != nil {
				t.Fatalf("Apply(%s) = %s: %v", body, got, err)
			}
			if s != tt.want {
				t.Errorf("%s on %q = %q, want %q", detector, tt.in, s, tt.want)
			}
			if n := strings.Count(tt.want, "["); counts.Detected != n {
				t.Errorf("%s on %q: Detected = %d, want %d", detector, tt.in, counts.Detected, n)
			}
		})
	}
}

func TestCreditCard(t *testing.T) {
	runDetect(t, "credit_card", []detectCase{
		{"4242424242424242", "[CREDIT_CARD]"},
		{"card 4242 4242 4242 4242 exp 12/27", "card [CREDIT_CARD] exp 12/27"},
		{"4242-4242-4242-4242", "[CREDIT_CARD]"},
		{"amex 378282246310005.", "amex [CREDIT_CARD]."},
		{"3782 822463 10005", "[CREDIT_CARD]"},
		{"diners 30569309025904", "diners [CREDIT_CARD]"},
		{"6011111111111117,5555555555554444", "[CREDIT_CARD],[CREDIT_CARD]"},
		{"visa13 4222222222222", "visa13 [CREDIT_CARD]"},
		{"19 digits 6250941006528599008", "19 digits [CREDIT_CARD]"},
		{"4242424242424242 5 items", "[CREDIT_CARD] 5 items"},
		{"qty 1 4242 4242 4242 4242", "qty 1 [CREDIT_CARD]"},
		{"ID4242424242424242", "ID[CREDIT_CARD]"},
		// negatives
		{"4242424242424241", "4242424242424241"},         // Luhn-invalid
		{"4242 4242 4242 4241", "4242 4242 4242 4241"},   // Luhn-invalid
		{"424242424242", "424242424242"},                 // 12 digits
		{"42424242424242424242", "42424242424242424242"}, // inside a longer run (20 digits)
		{"34242424242424242", "34242424242424242"},       // a valid card inside a longer run
		{"4242  4242 4242 4242", "4242  4242 4242 4242"}, // double space: separate numbers
		{"1700000000004", "1700000000004"},               // starts with 1: a millisecond timestamp
		{"0000000000000000", "0000000000000000"},         // starts with 0
		{"9999999999999995", "9999999999999995"},         // starts with 9
		{"4242424242424242.50", "4242424242424242.50"},   // a decimal number
		{"4242_4242_4242_4242", "4242_4242_4242_4242"},   // '_' is no separator
		{"no digits here", "no digits here"},
	})
}

func TestSSN(t *testing.T) {
	runDetect(t, "us_ssn", []detectCase{
		{"078-05-1120", "[US_SSN]"},
		{"ssn: 123-45-6789.", "ssn: [US_SSN]."},
		{"123 45 6789", "[US_SSN]"},
		{"a 665-01-0001 b 899-99-9999", "a [US_SSN] b [US_SSN]"},
		// negatives
		{"000-12-3456", "000-12-3456"},     // area 000
		{"666-12-3456", "666-12-3456"},     // area 666
		{"900-12-3456", "900-12-3456"},     // area 9xx
		{"123-00-4567", "123-00-4567"},     // group 00
		{"123-45-0000", "123-45-0000"},     // serial 0000
		{"123456789", "123456789"},         // no separators: not detected (documented)
		{"123-45 6789", "123-45 6789"},     // mixed separators
		{"1123-45-6789", "1123-45-6789"},   // longer run before
		{"123-45-67890", "123-45-67890"},   // longer run after
		{"9-123-45-6789", "9-123-45-6789"}, // part of a longer dashed number
		{"123-45-6789-1", "123-45-6789-1"}, // part of a longer dashed number
		{"12-345-6789", "12-345-6789"},
	})
}

func TestEmail(t *testing.T) {
	runDetect(t, "email", []detectCase{
		{"bob@example.com", "[EMAIL]"},
		{"mail Bob.Smith+tag@mail.example.co.uk, thanks", "mail [EMAIL], thanks"},
		{"<alice@example.org>", "<[EMAIL]>"},
		{"a@b.io and c_d@e-f.com.", "[EMAIL] and [EMAIL]."},
		{"josé@exämple.de", "[EMAIL]"},
		{"https://user:pass@host.example.com/x", "https://user:[EMAIL]/x"},
		{"x=bob@example.com", "x=[EMAIL]"},
		// negatives
		{"@handle", "@handle"},
		{"bob@localhost", "bob@localhost"},
		{"bob@10.0.0.1", "bob@10.0.0.1"},
		{"bob@example.c", "bob@example.c"},
		{"a @ b.com", "a @ b.com"},
		{"foo@", "foo@"},
	})
}

func TestPhone(t *testing.T) {
	runDetect(t, "phone", []detectCase{
		{"+14155552671", "[PHONE]"},
		{"call +1 212 555 0100 now", "call [PHONE] now"},
		{"+44 20 7946 0958", "[PHONE]"},
		{"+49 (0)30 1234567", "[PHONE]"},
		{"+33.1.23.45.67.89", "[PHONE]"},
		{"(212) 555-0100", "[PHONE]"},
		{"(212)555-0100", "[PHONE]"},
		{"212-555-0100", "[PHONE]"},
		{"212.555.0100", "[PHONE]"},
		{"tel 212 555 0100.", "tel [PHONE]."},
		{"1-800-555-0199", "[PHONE]"},
		{"+1 212 555 0100 12345", "[PHONE] 12345"},
		// negatives
		{"+1234567", "+1234567"},                   // 7 digits
		{"+1234567890123456", "+1234567890123456"}, // 16 digits
		{"2125550100", "2125550100"},               // bare national digits
		{"112-555-0100", "112-555-0100"},           // area code cannot start with 1
		{"212-155-0100", "212-155-0100"},           // exchange cannot start with 1
		{"212-555.0100", "212-555.0100"},           // mixed separators
		{"2024-01-15", "2024-01-15"},
		{"192.168.100.200", "192.168.100.200"},
		{"3212-555-0100", "3212-555-0100"},
		{"212-555-01000", "212-555-01000"},
	})
}

func TestIBAN(t *testing.T) {
	runDetect(t, "iban", []detectCase{
		{"DE89370400440532013000", "[IBAN]"},
		{"iban DE89 3704 0044 0532 0130 00, bic", "iban [IBAN], bic"},
		{"GB82 WEST 1234 5698 7654 32", "[IBAN]"},
		{"GB82WEST12345698765432", "[IBAN]"},
		{"NO9386011117947", "[IBAN]"},
		{"FR1420041010050500013M02606", "[IBAN]"},
		{"MT84MALT011000012345MTLCAST001S", "[IBAN]"},
		// negatives
		{"DE89370400440532013001", "DE89370400440532013001"}, // bad checksum
		{"GB82 WEST 1234 5698 7654 33", "GB82 WEST 1234 5698 7654 33"},
		{"DE8937040044053201300", "DE8937040044053201300"},             // too short for DE
		{"DE893704004405320130000", "DE893704004405320130000"},         // too long for DE
		{"XX89370400440532013000", "XX89370400440532013000"},           // no such country
		{"de89370400440532013000", "de89370400440532013000"},           // lower case
		{"DE89 370 4004 4053 2013 000", "DE89 370 4004 4053 2013 000"}, // not groups of four
	})
}

func TestBearerToken(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	runDetect(t, "bearer_token", []detectCase{
		{jwt, "[BEARER_TOKEN]"},
		{"token=" + jwt + "&x=1", "token=[BEARER_TOKEN]&x=1"},
		{"unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. done", "unsigned [BEARER_TOKEN] done"},
		{"Authorization: Bearer abcdef0123456789xyz", "Authorization: [BEARER_TOKEN]"},
		{"bearer ya29.a0AfH6SMBx-_~+/token== ok", "[BEARER_TOKEN] ok"},
		{"BEARER abcdefghijklmnopqrstuvwxyz", "[BEARER_TOKEN]"},
		{"Bearer " + jwt, "[BEARER_TOKEN]"},
		// negatives
		{"use a bearer token here", "use a bearer token here"},
		{"Bearer authentication", "Bearer authentication"},
		{"Bearer tokens/credentials", "Bearer tokens/credentials"},
		{"Bearer short123", "Bearer short123"},
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0"}, // two segments
		{"xeyJhbGciOiJIUzI1NiJ9.e.s", "xeyJhbGciOiJIUzI1NiJ9.e.s"},                       // inside a word
		{"eyJhbGc=", "eyJhbGc="},
	})
}

func TestAWSAccessKey(t *testing.T) {
	runDetect(t, "aws_access_key", []detectCase{
		{"AKIAIOSFODNN7EXAMPLE", "[AWS_ACCESS_KEY]"},
		{"key=ASIAY34FZKBOKMUTVV7A;", "key=[AWS_ACCESS_KEY];"},
		{"ABIA0123456789ABCDEF ACCA0123456789ABCDEF", "[AWS_ACCESS_KEY] [AWS_ACCESS_KEY]"},
		// negatives
		{"AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPL"},     // 19
		{"AKIAIOSFODNN7EXAMPLEX", "AKIAIOSFODNN7EXAMPLEX"}, // 21
		{"XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE"},
		{"AKIAiosfodnn7example", "AKIAiosfodnn7example"},
		{"AIDAIOSFODNN7EXAMPLE", "AIDAIOSFODNN7EXAMPLE"},
	})
}

func TestPrivateKey(t *testing.T) {
	const body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
	runDetect(t, "private_key", []detectCase{
		{"-----BEGIN RSA PRIVATE KEY-----\n" + body + "-----END RSA PRIVATE KEY-----\n", "[PRIVATE_KEY]\n"},
		{"key: -----BEGIN PRIVATE KEY-----\n" + body + "-----END PRIVATE KEY----- end", "key: [PRIVATE_KEY] end"},
		{"-----BEGIN OPENSSH PRIVATE KEY-----\r\n" + body + "-----END OPENSSH PRIVATE KEY-----", "[PRIVATE_KEY]"},
		{"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + body + "-----END ENCRYPTED PRIVATE KEY-----", "[PRIVATE_KEY]"},
		{"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + body + "-----END PGP PRIVATE KEY BLOCK-----", "[PRIVATE_KEY]"},
		{"truncated -----BEGIN EC PRIVATE KEY-----\n" + body, "truncated [PRIVATE_KEY]"},
		{"-----BEGIN PRIVATE KEY-----\nMIIE", "[PRIVATE_KEY]"},
		// negatives
		{"-----BEGIN CERTIFICATE-----\n" + body + "-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\n" + body + "-----END CERTIFICATE-----"},
		{"-----BEGIN PUBLIC KEY-----\n" + body + "-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\n" + body + "-----END PUBLIC KEY-----"},
	})
}

func TestDetectors(t *testing.T) {
	runApply(t, []applyCase{
		// Detection runs on the unescaped text; escapes outside the finding stay as written.
		{"escaped text", nil,
			`{"a":"\u00e9 b\u006fb@example.com \u00e9\n"}`, `{"a":"\u00e9 [EMAIL] \u00e9\n"}`, Counts{Detected: 1}},
		{"escape at the edge of a finding", nil,
			`{"a":"\u0062ob@example.co\u006d."}`, `{"a":"[EMAIL]."}`, Counts{Detected: 1}},
		{"PEM with escaped newlines", nil,
			`{"k":"x -----BEGIN PRIVATE KEY-----\nMIIE\/abc\n-----END PRIVATE KEY-----\n"}`, `{"k":"x [PRIVATE_KEY]\n"}`, Counts{Detected: 1}},
		{"keys are not scanned", nil,
			`{"bob@example.com":"bob@example.com"}`, `{"bob@example.com":"[EMAIL]"}`, Counts{Detected: 1}},
		{"numbers are not scanned", nil,
			`{"n":4242424242424242}`, `{"n":4242424242424242}`, Counts{}},
		{"everywhere in the document", nil,
			`[["bob@example.com"],{"a":{"b":"x 078-05-1120"}}]`, `[["[EMAIL]"],{"a":{"b":"x [US_SSN]"}}]`, Counts{Detected: 2}},
		{"several in one string", nil,
			`"a@b.io, 4242424242424242; AKIAIOSFODNN7EXAMPLE"`, `"[EMAIL], [CREDIT_CARD]; [AWS_ACCESS_KEY]"`, Counts{Detected: 3}},
		{"overlapping findings merge", nil,
			`"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"`, `"[BEARER_TOKEN]"`, Counts{Detected: 1}},
		{"masked values are not scanned", []config.MaskRule{mr("a", "last4")},
			`{"a":"bob@example.com","b":"bob@example.com"}`, `{"a":"***********.com","b":"[EMAIL]"}`, Counts{Last4: 1, Detected: 1}},
	}, allDetectors...)
}

func TestText(t *testing.T) {
	m, err := New(nil, []string{"us_ssn", "email"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ in, want string }{
		{"customer", "customer"},
		{"123-45-6789", "[US_SSN]"},
		{"/next?who=ada@example.com&ssn=123-45-6789", "/next?who=[EMAIL]&ssn=[US_SSN]"},
	} {
		got, _ := m.Text(nil, []byte(c.in))
		if string(got) != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
