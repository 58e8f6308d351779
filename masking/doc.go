// Package masking masks JSON responses: configured fields by gjson path, and secrets
// found by content detectors in any string value.
package masking
