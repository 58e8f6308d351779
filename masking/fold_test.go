package masking

import (
	"testing"

	"github.com/keyholehq/keyhole/config"
)

// TestCaseInsensitive: a rule with case_insensitive masks every case spelling of its keys,
// escaped or not, and a rule without it only the exact one.
func TestCaseInsensitive(t *testing.T) {
	ci := func(field, action string) []config.MaskRule {
		return []config.MaskRule{{Field: field, Action: action, CaseInsensitive: true}}
	}
	runApply(t, []applyCase{
		{"exact only without the flag", []config.MaskRule{{Field: "ssn", Action: "redact"}},
			`{"ssn":"1","SSN":"2"}`, `{"ssn":"[REDACTED]","SSN":"2"}`, Counts{Redact: 1}},
		{"every spelling", ci("ssn", "redact"),
			`{"ssn":"1","SSN":"2","Ssn":"3","sSn":"4"}`, `{"ssn":"[REDACTED]","SSN":"[REDACTED]","Ssn":"[REDACTED]","sSn":"[REDACTED]"}`, Counts{Redact: 4}},
		{"escaped key", ci("ssn", "redact"), `{"\u0053SN":"1"}`, `{"\u0053SN":"[REDACTED]"}`, Counts{Redact: 1}},
		{"Kelvin sign folds with k", ci("key", "redact"), `{"\u212aey":"1"}`, `{"\u212aey":"[REDACTED]"}`, Counts{Redact: 1}},
		{"nested path", ci("payment.card_number", "last4"),
			`{"Payment":{"Card_Number":"4242424242424242"}}`, `{"Payment":{"Card_Number":"************4242"}}`, Counts{Last4: 1}},
		{"glob", ci("secret_*", "remove"), `{"SECRET_A":1,"b":2}`, `{"b":2}`, Counts{Remove: 1}},
		{"array elements", ci("customers.#.ssn", "redact"),
			`{"Customers":[{"SSN":"1"},{"ssn":"2"}]}`, `{"Customers":[{"SSN":"[REDACTED]"},{"ssn":"[REDACTED]"}]}`, Counts{Redact: 2}},
		{"condition keys fold", ci(`orders.#(Status=="refunded")#.card`, "redact"),
			`{"orders":[{"status":"refunded","card":"x"},{"status":"paid","card":"y"}]}`,
			`{"orders":[{"status":"refunded","card":"[REDACTED]"},{"status":"paid","card":"y"}]}`, Counts{Redact: 1}},
		{"other keys untouched", ci("ssn", "redact"), `{"ssns":"1","sn":"2"}`, `{"ssns":"1","sn":"2"}`, Counts{}},
	})
}
