package anytls_test

import "syscall"

// setRcvBuf sets a socket's receive buffer (before listen, so that accepted
// connections get it too).
func setRcvBuf(fd uintptr, n int) {
	syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
