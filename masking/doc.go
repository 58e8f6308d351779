// Package masking masks JSON responses before a client sees them: fields named by gjson
// paths, and secrets that content detectors find in any string value.
//
// A route's mask rules and detectors are compiled once by New into a Masker; its Apply
// masks one JSON document (a response body, one NDJSON line, the JSON of one SSE event).
// The package is pure: no I/O, no logging, no metrics. Apply returns counts for the
// caller to report.
//
// # Guarantees
//
// Apply walks the document once, validating it as it goes, collects the byte spans to
// change, and writes the output in one pass. It fails closed: a body that is not one
// valid JSON value (RFC 8259, in UTF-8, surrounding whitespace allowed) or that nests
// arrays and objects deeper than 512 levels is refused with an error and no output, so
// a partly masked body is never returned. The error wraps ErrNotJSON for a body that
// does not even begin like a JSON object, array or string (an HTML error page, plain
// text), which a route may choose to pass on; and ErrInvalidJSON for one that does
// (truncated, malformed, not UTF-8, too deep), which must never be passed on, since
// lenient clients may still read what it holds.
//
// Everything not masked is copied byte for byte: whitespace, key order, number
// formatting and escapes stay as the upstream wrote them.
//
// Every occurrence is masked: each element of an array, each of duplicate keys in one
// object ({"ssn":"a","ssn":"b"} masks both; parsers disagree on which one they keep),
// and keys written with escapes ("s\u0073n" is the key ssn: keys are compared after
// unescaping). Keys are compared exactly, letter case included, as gjson does.
//
// # Paths
//
// Fields are named in gjson syntax (https://github.com/tidwall/gjson/blob/master/SYNTAX.md):
//
//	ssn                         the member ssn of the top-level object
//	payment.card_number         a nested member
//	customers.#.ssn             ssn in every element of the array customers
//	users.#.cards.#.number      '#' at any depth
//	tags.#                      every element of tags (gjson would return the array's length;
//	                            a length is no value to mask, so here '#' last means each element)
//	items.0.secret              an array index (a member keyed "0" of an object too, as in gjson)
//	#.ssn                       ssn in every element of a top-level array
//	*.token, card_*, k?y        wildcards: '*' any run of characters, '?' one; unlike gjson,
//	                            which returns the first matching key, every matching key is masked
//	a\.b                        a key with a literal dot (also \*, \?, \#, \@ ...)
//	users.#(role=="admin")#.ssn ssn of every element for which the condition holds
//
// Conditions follow gjson: a sub-path of the element (or nothing, for the element itself),
// an operator ==, !=, <, <=, >, >= or % and !% (a '*'/'?' pattern), and a value: a JSON
// string, a number, true or false, or ~true, ~false, ~null, ~* (gjson's truthiness tests);
// without an operator, the sub-path must exist (#(nickname)#). Strings compare as
// strings, numbers as numbers, as gjson compares them. Where a document is ambiguous the
// condition holds if it holds for any reading: with duplicate keys, any of them; with a
// wildcard in the sub-path, any matching key; "a.#.b" in a condition, any element's b
// (gjson would compare the array of them and never match); "a.#" at the end of a
// sub-path is the array's length, as in gjson.
//
// Refused at New, each as a *RuleError naming the rule: modifiers (@reverse), multipaths
// ([a,b], {a,b}), pipes (a|b), literals (!true), the JSON-lines prefix (..; NDJSON is
// masked line by line), empty keys (a..b), brackets (a[0] is not an index in gjson), and
// #(...) without the trailing '#': it selects only the first match, and masking only the
// first of several matching elements would leak the others.
//
// # Actions
//
// Each matched value is replaced whole, objects and arrays included:
//
//	redact   "[REDACTED]", or the rule's with string
//	remove   the member disappears from its object (with its comma, so the output stays
//	         valid JSON); an array element becomes null instead, so that the elements after
//	         it keep their indexes
//	hash     "sha256:<hex>": HMAC-SHA256 under Options.HashKey, a per-deployment secret, so
//	         equal values hash alike across responses (joinable) but cannot be found by
//	         hashing guesses. A string is hashed as its unescaped text ("\u00e9" and "é" hash
//	         alike); any other value as its JSON text as written (1.0 and 1 differ)
//	last4    asterisks and the last four characters of a string ("************4242"),
//	         always at least four characters masked: a string of 5 to 7 characters shows its
//	         last 1 to 3, one of 4 or fewer shows none. Characters are Unicode code points of
//	         the unescaped text. A value that is not a string is redacted.
//
// When several rules match one value, the one that hides most wins: remove, then redact,
// then hash, then last4 (and the first rule on a tie). A value inside a value that is
// masked whole is not looked at again.
//
// # Counts
//
// Counts has one count per action: the number of values that action replaced (a value is
// counted once, under the action applied, however many rules matched it; last4 on a value
// that is not a string counts as last4; an array element removed to null counts as
// remove). Detected is the number of spans detectors replaced: a string holding two e-mail
// addresses counts 2.
//
// # Detectors
//
// Detectors scan the text of every string value that no rule masked, after unescaping
// (so "\u0034242..." is seen as "4242..."). Object keys, numbers and literals are not
// scanned: a card number sent as a JSON number needs a field rule. Only the detected span
// is replaced, by a token: "call me at bob@example.com" becomes "call me at [EMAIL]".
// Findings that overlap merge into one span. The rest of the string, escapes included,
// is kept as written.
//
// Detectors are hand-written scanners, linear in the length of the text, tuned to miss
// few real secrets while leaving ordinary text alone. What each one finds, and where it
// errs:
//
//	credit_card    [CREDIT_CARD]. 13 to 19 digits, optionally in groups joined by single
//	               spaces or dashes, passing the Luhn check, first digit 2 to 8 (Visa,
//	               Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, Mir, RuPay).
//	               Misses numbers starting with 1 (UATP) or 9, which are rare as cards and
//	               common as millisecond timestamps and database ids; numbers inside a longer
//	               digit run or decimal number; other separators ("4242.4242..."). About one
//	               random 13-19 digit string in ten passes Luhn, so long numeric ids starting
//	               with 2-8 written as strings may be masked.
//	us_ssn         [US_SSN]. AAA-GG-SSSS, or with single spaces, where the area is not 000,
//	               666 or 900-999, the group not 00 and the serial not 0000, and no digit or
//	               further group continues it. Nine digits without separators are not
//	               detected (order numbers, ZIP+4 codes and ids look the same): mask known SSN
//	               fields with a field rule.
//	email          [EMAIL]. local@domain with a domain of two or more labels and a final
//	               label of two or more letters. Non-ASCII letters count (internationalised
//	               addresses), so in text without spaces (Chinese, Japanese) neighbouring
//	               words may be masked with the address. Misses addresses at IP literals and
//	               single-label domains (bob@localhost).
//	phone          [PHONE]. E.164: "+" and 8 to 15 digits, with spaces, dashes, dots or
//	               parentheses between them ("+1 212 555 0100", "+44 (0)20 7946 0958"); and
//	               North American national formats "(212) 555-0100", "212-555-0100",
//	               "212.555.0100", "212 555 0100" (area and exchange codes starting 2-9),
//	               optionally after "1-". Misses national formats of other countries and ten
//	               bare digits (too much else looks like them); "+" before a long decimal
//	               number may be masked.
//	iban           [IBAN]. Country code, check digits and exactly the country's length of
//	               upper-case letters and digits (SWIFT registry and the countries using
//	               IBANs outside it), compact or with spaces between groups of four, valid
//	               under ISO 7064 mod 97. Misses lower-case IBANs and irregular grouping.
//	               The length and checksum make false positives rare (1 in 97 of the
//	               strings shaped like an IBAN of a known country).
//	bearer_token   [BEARER_TOKEN]. JSON Web Tokens (JWS and JWE: three to five base64url
//	               segments, the first starting "eyJ", an encoded '{"'), and "Bearer <token>"
//	               in any letter case, the token being at least 16 characters with a digit,
//	               or 24 characters (so that "a bearer token" in prose is left alone).
//	               Misses opaque tokens without the word Bearer, and short ones.
//	aws_access_key [AWS_ACCESS_KEY]. AKIA, ASIA, ABIA or ACCA and 16 upper-case letters or
//	               digits, not inside a longer word. Secret access keys (40 characters of
//	               base64) have no recognisable shape: mask their fields.
//	private_key    [PRIVATE_KEY]. A PEM block from "-----BEGIN <label>-----", where the
//	               label holds "PRIVATE KEY" (RSA, EC, OPENSSH, ENCRYPTED, PGP ... BLOCK),
//	               through its "-----END <label>-----" line; with no END line, to the end of
//	               the string, since a truncated key is still a secret.
//
// # Cost
//
// Apply costs about one validation of the document plus the work on matched values: on
// a 1 MB array of 4,000 customers with five paths (a nested '#' and a filter among them)
// it runs at roughly 200-300 MB/s on a 2-core server, with every detector on only
// slightly slower, and a 10 KB response with two paths takes about 15 µs. Filters read
// each element they test once more before it is walked. Apply does not allocate beyond
// growing dst and its pooled scratch buffers.
package masking
