package masking_test

import (
	"fmt"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/masking"
)

func Example() {
	m, err := masking.New([]config.MaskRule{
		{Field: "customers.#.ssn", Action: "redact"},
		{Field: "customers.#.payment.card_number", Action: "last4"},
		{Field: `customers.#(tier=="gold")#.notes`, Action: "remove"},
	}, []string{"email", "us_ssn"}, masking.Options{})
	if err != nil {
		panic(err)
	}
	body := []byte(`{"customers": [
  {"name": "Ann", "ssn": "078-05-1120", "payment": {"card_number": "4242424242424242"}, "tier": "gold", "notes": "VIP"},
  {"name": "Bob", "ssn": "123-45-6789", "payment": {"card_number": "5555555555554444"}, "tier": "silver",
   "notes": "write to bob@example.com, not 219-09-9999"}
]}`)
	out, counts, err := m.Apply(nil, body)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(out))
	fmt.Printf("%+v\n", counts)
	// Output:
	// {"customers": [
	//   {"name": "Ann", "ssn": "[REDACTED]", "payment": {"card_number": "************4242"}, "tier": "gold"},
	//   {"name": "Bob", "ssn": "[REDACTED]", "payment": {"card_number": "************4444"}, "tier": "silver",
	//    "notes": "write to [EMAIL], not [US_SSN]"}
	// ]}
	// {Redact:2 Remove:1 Hash:0 Last4:2 Detected:2}
}

func ExampleNew_errors() {
	_, err := masking.New([]config.MaskRule{
		{Field: "users.#.ssn", Action: "redact"},
		{Field: `users.#(role=="admin").ssn`, Action: "redact"},
		{Field: "users|@reverse", Action: "redact"},
	}, nil, masking.Options{})
	fmt.Println(err)
	// Output:
	// unsupported gjson path "users.#(role==\"admin\").ssn": #(...) masks only the first matching element; write #(...)# to mask every match
	// unsupported gjson path "users|@reverse": pipes are not supported
}
