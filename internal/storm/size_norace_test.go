//go:build !race

// Without the race detector the storm test runs the CI size: 5,000 clients.
package storm

const defaultStormClients = 5000
