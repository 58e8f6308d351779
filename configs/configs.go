// Package configs holds Keyhole's shipped configuration files: keyhole.yaml, the commented
// reference, and demo.yaml, which `keyhole demo` runs. Both are embedded in the binary.
package configs

import _ "embed"

// Demo is configs/demo.yaml.
//
//go:embed demo.yaml
var Demo []byte
