//go:build race

// Under the race detector the storm test runs with fewer clients: the
// detector makes every client and the server several times slower.
package storm

const defaultStormClients = 300
