// Package e2e holds PIM's end-to-end tests: a real server (in process or as
// a child process) on random loopback ports, real sockets, the real store,
// driven through the protocol client. It has no non-test code beyond this
// comment.
package e2e
