//go:build race

// raceEnabled tells measurement tests that the race detector distorts them.
package gateway

const raceEnabled = true
