//go:build race

package sim

// raceEnabled shortens each seed under the race detector (about 5x slower),
// so that the default 1,000 seeds still run in about a minute.
const raceEnabled = true
