//go:build race

package main

// raceEnabled: the race detector multiplies memory use, so fault tests log RSS instead of
// bounding it.
const raceEnabled = true
