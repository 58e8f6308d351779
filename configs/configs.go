// Package configs holds Keyhole's shipped configuration files: keyhole.yaml, the commented
// reference, and demo.yaml, which `keyhole demo` runs, both embedded in the binary; and
// container.yaml, which the container image bakes in as /etc/keyhole/keyhole.yaml.
package configs

import _ "embed"

// Demo is configs/demo.yaml.
//
//go:embed demo.yaml
var Demo []byte
