package masking

import (
	"bytes"
	"math/bits"
)

// detectors is a set of content detectors, one bit each.
type detectors uint16

const (
	detCreditCard detectors = 1 << iota
	detSSN
	detEmail
	detPhone
	detIBAN
	detBearer
	detAWS
	detPrivateKey
)

func detectorByName(name string) (detectors, bool) {
	switch name {
	case "credit_card":
		return detCreditCard, true
	case "us_ssn":
		return detSSN, true
	case "email":
		return detEmail, true
	case "phone":
		return detPhone, true
	case "iban":
		return detIBAN, true
	case "bearer_token":
		return detBearer, true
	case "aws_access_key":
		return detAWS, true
	case "private_key":
		return detPrivateKey, true
	}
	return 0, false
}

// tokens are the replacements of detected spans, by detector bit.
var tokens = [...][]byte{
	[]byte("[CREDIT_CARD]"),
	[]byte("[US_SSN]"),
	[]byte("[EMAIL]"),
	[]byte("[PHONE]"),
	[]byte("[IBAN]"),
	[]byte("[BEARER_TOKEN]"),
	[]byte("[AWS_ACCESS_KEY]"),
	[]byte("[PRIVATE_KEY]"),
}

// token returns the replacement of a span that detector d found (d has one bit).
func (d detectors) token() []byte { return tokens[bits.TrailingZeros16(uint16(d))] }

// finding is a span [start, end) of a string's text that detector det found.
type finding struct {
	start, end int
	det        detectors
}

// seg is a run of digits [start, end).
type seg struct{ start, end int }

// scratch holds the detectors' buffers, reused from string to string.
type scratch struct {
	found []finding
	segs  []seg
}

func (d *scratch) release() {
	if cap(d.found) > 1<<12 {
		d.found = nil
	}
	if cap(d.segs) > 1<<12 {
		d.segs = nil
	}
}

func (d *scratch) add(start, end int, det detectors) {
	d.found = append(d.found, finding{start: start, end: end, det: det})
}

// Character classes for the prefilter: which detectors can possibly match a string.
const (
	clsDigit = 1 << iota
	clsSep   // ' ' or '-'
	clsPlus
	clsAt
	clsUpper
	clsJ // 'J', as in eyJ
	clsB // 'b' or 'B', as in Bearer
	clsDash
)

var charClass = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] = clsDigit
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = clsUpper
	}
	t[' '] = clsSep
	t['-'] = clsSep | clsDash
	t['+'] = clsPlus
	t['@'] = clsAt
	t['J'] |= clsJ
	t['B'] |= clsB
	t['b'] = clsB
	return t
}()

// find returns the spans of text that the detectors in set find, sorted and merged
// where they overlap (the longer finding names the merged span).
func (d *scratch) find(text []byte, set detectors) []finding {
	d.found = d.found[:0]
	var cls uint8
	digits := 0
	for _, c := range text {
		k := charClass[c]
		cls |= k
		digits += int(k & clsDigit)
	}
	n := len(text)
	if set&detCreditCard != 0 && digits >= 13 {
		d.cards(text)
	}
	if set&detSSN != 0 && digits >= 9 && cls&clsSep != 0 {
		d.ssns(text)
	}
	if set&detPhone != 0 && (digits >= 10 || digits >= 8 && cls&clsPlus != 0) {
		d.phones(text)
	}
	if set&detIBAN != 0 && digits >= 2 && n >= 15 && cls&clsUpper != 0 {
		d.ibans(text)
	}
	if set&detEmail != 0 && cls&clsAt != 0 {
		d.emails(text)
	}
	if set&detBearer != 0 && (cls&clsJ != 0 && n >= 20 || cls&clsB != 0 && n >= 23) {
		d.bearers(text)
	}
	if set&detAWS != 0 && cls&clsUpper != 0 && n >= 20 {
		d.awsKeys(text)
	}
	if set&detPrivateKey != 0 && cls&clsDash != 0 && n >= len("-----BEGIN PRIVATE KEY-----") {
		d.privateKeys(text)
	}
	if len(d.found) < 2 {
		return d.found
	}
	fs := d.found
	for i := 1; i < len(fs); i++ { // insertion sort: findings are few
		for j := i; j > 0 && fs[j].start < fs[j-1].start; j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
	out := fs[:1]
	for _, f := range fs[1:] {
		last := &out[len(out)-1]
		if f.start >= last.end {
			out = append(out, f)
			continue
		}
		if f.end-f.start > last.end-last.start {
			last.det = f.det
		}
		last.end = max(last.end, f.end)
	}
	d.found = out
	return out
}

func isDigit(c byte) bool { return c-'0' < 10 }
func isUpper(c byte) bool { return c-'A' < 26 }
func isAlnum(c byte) bool { return c-'0' < 10 || (c|0x20)-'a' < 26 }

// cards finds payment card numbers: 13 to 19 digits, in runs joined by single spaces
// or dashes, Luhn-valid, starting with 2 to 8. A run of digits is never split: a card
// number inside a longer number is not one.
func (d *scratch) cards(s []byte) {
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		d.segs = d.segs[:0]
		for {
			j := i
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			d.segs = append(d.segs, seg{i, j})
			i = j
			if j+1 < len(s) && (s[j] == ' ' || s[j] == '-') && isDigit(s[j+1]) {
				i = j + 1
				continue
			}
			break
		}
		g0, g1 := d.segs[0].start, d.segs[len(d.segs)-1].end
		// The digits of a decimal number ("1234567890123.45") are no card number.
		if g0 >= 2 && s[g0-1] == '.' && isDigit(s[g0-2]) || g1+1 < len(s) && s[g1] == '.' && isDigit(s[g1+1]) {
			continue
		}
		segs := d.segs
		for a := 0; a < len(segs); a++ {
			if first := s[segs[a].start]; first < '2' || first > '8' {
				continue
			}
			n, best := 0, -1
			for b := a; b < len(segs); b++ {
				n += segs[b].end - segs[b].start
				if n > 19 {
					break
				}
				if n >= 13 && luhn(s[segs[a].start:segs[b].end]) {
					best = b
				}
			}
			if best >= 0 {
				d.add(segs[a].start, segs[best].end, detCreditCard)
				a = best
			}
		}
	}
}

// luhn reports whether the digits of s (other bytes skipped) pass the Luhn check.
func luhn(s []byte) bool {
	sum, double := 0, false
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if !isDigit(c) {
			continue
		}
		v := int(c - '0')
		if double {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}

// ssns finds US social security numbers written AAA-GG-SSSS (or with spaces): area
// not 000, 666 or 9xx, group not 00, serial not 0000, not part of a longer number.
// Nine digits without separators are not detected: too many other identifiers look
// like that; mask known SSN fields with a field rule.
func (d *scratch) ssns(s []byte) {
	for i := 0; i+11 <= len(s); i++ {
		if !isDigit(s[i]) {
			continue
		}
		sep := s[i+3]
		if sep != '-' && sep != ' ' || s[i+6] != sep ||
			!allDigits(s[i:i+3]) || !allDigits(s[i+4:i+6]) || !allDigits(s[i+7:i+11]) {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || i > 1 && s[i-1] == sep && isDigit(s[i-2])) {
			continue
		}
		if e := i + 11; e < len(s) && (isDigit(s[e]) || e+1 < len(s) && s[e] == sep && isDigit(s[e+1])) {
			continue
		}
		area := num(s[i : i+3])
		if area == 0 || area == 666 || area >= 900 || num(s[i+4:i+6]) == 0 || num(s[i+7:i+11]) == 0 {
			continue
		}
		d.add(i, i+11, detSSN)
		i += 10
	}
}

func allDigits(s []byte) bool {
	for _, c := range s {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

func num(s []byte) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// phones finds phone numbers: E.164 ("+" and 8 to 15 digits, with spaces, dashes, dots
// and parentheses between them) and the North American national formats
// "(212) 555-0100", "212-555-0100", "212.555.0100", "212 555 0100", with an optional
// leading "1-". Ten bare digits are not detected.
func (d *scratch) phones(s []byte) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '+' && c != '(' && !isDigit(c) {
			continue
		}
		if i > 0 && (isDigit(s[i-1]) || s[i-1] == '+') {
			continue
		}
		end := -1
		if c == '+' {
			end = e164(s, i)
		} else {
			end = nanp(s, i)
		}
		if end > 0 {
			d.add(i, end, detPhone)
			i = end - 1
		}
	}
}

// e164 returns the end of the international number at s[i] == '+', or -1.
func e164(s []byte, i int) int {
	n, seps, end := 0, 0, -1
	for j := i + 1; j < len(s); j++ {
		c := s[j]
		if isDigit(c) {
			if n == 0 && seps > 0 {
				return -1 // "+" then a separator
			}
			n++
			seps = 0
			if n > 15 {
				break
			}
			if n >= 8 && (j+1 == len(s) || !isDigit(s[j+1])) {
				end = j + 1 // a group ends with a plausible number
			}
			continue
		}
		if c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' {
			if seps++; seps > 2 {
				break
			}
			continue
		}
		break
	}
	return end
}

// nanp returns the end of the North American number at s[i], or -1.
func nanp(s []byte, i int) int {
	j := i
	if s[j] == '1' && j+1 < len(s) && (s[j+1] == '-' || s[j+1] == ' ' || s[j+1] == '.') {
		j += 2
	}
	paren := j < len(s) && s[j] == '('
	if paren {
		j++
	}
	if j+3 > len(s) || !allDigits(s[j:j+3]) || s[j] < '2' {
		return -1
	}
	j += 3
	var sep byte
	if paren {
		if j >= len(s) || s[j] != ')' {
			return -1
		}
		j++
		if j < len(s) && (s[j] == ' ' || s[j] == '-') {
			j++
		}
	} else {
		if j >= len(s) || s[j] != '-' && s[j] != '.' && s[j] != ' ' {
			return -1
		}
		sep = s[j]
		j++
	}
	if j+8 > len(s) || !allDigits(s[j:j+3]) || s[j] < '2' {
		return -1
	}
	j += 3
	if sep == 0 && s[j] != '-' && s[j] != '.' && s[j] != ' ' || sep != 0 && s[j] != sep {
		return -1
	}
	j++
	if !allDigits(s[j : j+4]) {
		return -1
	}
	j += 4
	if j < len(s) && isDigit(s[j]) {
		return -1
	}
	return j
}

// ibans finds IBANs: a country code, two check digits and the country's length of
// upper-case letters and digits, compact or with a space between groups of four,
// valid under ISO 7064 mod 97-10.
func (d *scratch) ibans(s []byte) {
	for i := 0; i+15 <= len(s); i++ {
		if !isUpper(s[i]) || !isUpper(s[i+1]) || !isDigit(s[i+2]) || !isDigit(s[i+3]) {
			continue
		}
		if i > 0 && isAlnum(s[i-1]) {
			continue
		}
		n := ibanLength(s[i], s[i+1])
		if n == 0 {
			continue
		}
		j, k, r := i, 0, 0
		for ; k < n && j < len(s); k++ {
			c := s[j]
			if k > 0 && k%4 == 0 && c == ' ' && j+1 < len(s) {
				j++
				c = s[j]
			}
			if !isUpper(c) && !isDigit(c) {
				break
			}
			if k >= 4 {
				r = mod97(r, c)
			}
			j++
		}
		if k < n || j < len(s) && isAlnum(s[j]) {
			continue
		}
		for _, c := range s[i : i+4] {
			r = mod97(r, c)
		}
		if r != 1 {
			continue
		}
		d.add(i, j, detIBAN)
		i = j - 1
	}
}

// mod97 appends the digit or letter (A = 10 … Z = 35) c to the number whose
// remainder mod 97 is r.
func mod97(r int, c byte) int {
	if isDigit(c) {
		return (r*10 + int(c-'0')) % 97
	}
	return (r*100 + int(c-'A') + 10) % 97
}

// ibanLength returns the IBAN length of a country (SWIFT IBAN registry, and the
// countries that use IBANs outside it), or 0.
func ibanLength(a, b byte) int {
	switch string([]byte{a, b}) {
	case "NO":
		return 15
	case "BE":
		return 16
	case "DK", "FI", "FK", "FO", "GL", "NL", "SD":
		return 18
	case "MK", "SI":
		return 19
	case "AT", "BA", "EE", "KZ", "LT", "LU", "MN", "XK":
		return 20
	case "CH", "HR", "LI", "LV":
		return 21
	case "BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA":
		return 22
	case "AE", "GI", "IL", "IQ", "OM", "SO", "TL":
		return 23
	case "AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG":
		return 24
	case "LY", "PT", "ST", "AO", "CV", "GW", "MZ":
		return 25
	case "IS", "TR", "DZ", "IR":
		return 26
	case "BI", "DJ", "FR", "GR", "IT", "MC", "MR", "SM", "CF", "CG", "CM", "GA", "GQ", "KM", "MG", "TD":
		return 27
	case "AL", "AZ", "BY", "CY", "DO", "GT", "HN", "HU", "LB", "NI", "PL", "SV", "BF", "BJ", "CI", "MA", "ML", "NE", "SN", "TG":
		return 28
	case "BR", "EG", "PS", "QA", "UA":
		return 29
	case "JO", "KW", "MU", "YE":
		return 30
	case "MT", "SC":
		return 31
	case "LC":
		return 32
	case "RU":
		return 33
	}
	return 0
}

// emails finds e-mail addresses: a local part, "@", and a domain of two or more labels
// whose last is two or more letters. Non-ASCII letters count as letters (EAI), so an
// address written in a language without spaces may take neighbouring words with it.
func (d *scratch) emails(s []byte) {
	for from := 0; from < len(s); {
		k := bytes.IndexByte(s[from:], '@')
		if k < 0 {
			return
		}
		k += from
		from = k + 1
		a := k
		for a > 0 && localChar(s[a-1]) {
			a--
		}
		for a < k && s[a] == '.' {
			a++
		}
		if a == k {
			continue
		}
		j, end, labels, last := k+1, -1, 0, 0
		for {
			ls := j
			for j < len(s) && domainChar(s[j]) {
				j++
			}
			if j == ls {
				break
			}
			labels++
			last, end = ls, j
			if j+1 < len(s) && s[j] == '.' && domainChar(s[j+1]) {
				j++
				continue
			}
			break
		}
		if labels < 2 || end-last < 2 || !tld(s[last:end]) {
			continue
		}
		d.add(a, end, detEmail)
		from = end
	}
}

func localChar(c byte) bool {
	if isAlnum(c) || c >= 0x80 {
		return true
	}
	switch c {
	case '.', '!', '#', '$', '%', '&', '*', '+', '-', '^', '_', '~':
		return true
	}
	return false
}

func domainChar(c byte) bool { return isAlnum(c) || c == '-' || c >= 0x80 }

func tld(s []byte) bool {
	for _, c := range s {
		if (c|0x20)-'a' >= 26 && c < 0x80 {
			return false
		}
	}
	return true
}

// bearers finds JSON Web Tokens (three to five base64url segments, the first starting
// with "eyJ", the encoding of `{"`) and "Bearer <token>" (any case; the token at
// least 16 characters with a digit, or 24 characters, so that prose such as "a bearer
// token" is left alone).
func (d *scratch) bearers(s []byte) {
	for from := 0; from < len(s); {
		k := bytes.Index(s[from:], []byte("eyJ"))
		if k < 0 {
			break
		}
		k += from
		from = k + 3
		if k > 0 && b64url(s[k-1]) {
			continue
		}
		j := k
		for j < len(s) && b64url(s[j]) {
			j++
		}
		if j-k < 10 {
			continue
		}
		segs, end := 1, j
		for segs < 5 && j < len(s) && s[j] == '.' {
			j++
			for j < len(s) && b64url(s[j]) {
				j++
			}
			segs++
			end = j
		}
		if segs < 3 {
			continue
		}
		d.add(k, end, detBearer)
		from = end
	}
	for i := 0; i+7 < len(s); i++ {
		if s[i]|0x20 != 'b' || !bytes.EqualFold(s[i:i+6], []byte("bearer")) || i > 0 && isAlnum(s[i-1]) {
			continue
		}
		j := i + 6
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			j++
		}
		if j == i+6 {
			continue
		}
		t, digit := j, false
		for j < len(s) && b64token(s[j]) {
			digit = digit || isDigit(s[j])
			j++
		}
		if n := j - t; n < 16 || n < 24 && !digit {
			continue
		}
		for j < len(s) && s[j] == '=' {
			j++
		}
		d.add(i, j, detBearer)
		i = j - 1
	}
}

func b64url(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }

// b64token reports whether c may appear in an RFC 6750 b64token (before the '=' padding).
func b64token(c byte) bool {
	return isAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}

// awsKeys finds AWS access key ids: AKIA, ASIA, ABIA or ACCA and 16 upper-case letters
// or digits, not inside a longer word.
func (d *scratch) awsKeys(s []byte) {
	for from := 0; from+20 <= len(s); {
		k := bytes.IndexByte(s[from:len(s)-19], 'A')
		if k < 0 {
			return
		}
		i := from + k
		from = i + 1
		switch string(s[i : i+4]) {
		case "AKIA", "ASIA", "ABIA", "ACCA":
		default:
			continue
		}
		if i > 0 && isAlnum(s[i-1]) || i+20 < len(s) && isAlnum(s[i+20]) {
			continue
		}
		ok := true
		for _, c := range s[i+4 : i+20] {
			if !isUpper(c) && !isDigit(c) {
				ok = false
				break
			}
		}
		if ok {
			d.add(i, i+20, detAWS)
			from = i + 20
		}
	}
}

// privateKeys finds PEM private keys, from "-----BEGIN <label>-----" with a label that
// holds "PRIVATE KEY" through "-----END <label>-----", or to the end of the string when
// the END line is missing (a truncated key is still a secret).
func (d *scratch) privateKeys(s []byte) {
	begin, end, dashes := []byte("-----BEGIN "), []byte("-----END "), []byte("-----")
	for from := 0; from < len(s); {
		k := bytes.Index(s[from:], begin)
		if k < 0 {
			return
		}
		k += from
		ls := k + len(begin)
		from = ls
		le := bytes.Index(s[ls:], dashes)
		if le < 0 {
			continue
		}
		label := s[ls : ls+le]
		if !bytes.Contains(label, []byte("PRIVATE KEY")) || bytes.ContainsAny(label, "\r\n") {
			continue
		}
		stop := len(s)
		for j := ls + le + len(dashes); j < len(s); {
			e := bytes.Index(s[j:], end)
			if e < 0 {
				break
			}
			e += j + len(end)
			if bytes.HasPrefix(s[e:], label) && bytes.HasPrefix(s[e+len(label):], dashes) {
				stop = e + len(label) + len(dashes)
				break
			}
			j = e
		}
		d.add(k, stop, detPrivateKey)
		from = stop
	}
}
