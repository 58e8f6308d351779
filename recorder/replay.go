package recorder

// ReplayError is a replay refused for a reason the auditor can act on (an unknown
// target, an upstream no longer configured); Status and Code are what the API answers.
type ReplayError struct {
	Status int
	Code   string
	Msg    string
}

// Error returns the code and message.
func (e *ReplayError) Error() string { return e.Code + ": " + e.Msg }
