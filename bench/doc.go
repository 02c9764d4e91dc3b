// Package bench holds the performance measurements of anytls-suite.
//
// The side-by-side harness (ours, sing-anytls, a plain TLS relay and a direct
// connection on loopback) is the command bench/cmd/anytls-bench; its results
// are in docs/benchmarks.md. This package has only the microbenchmarks of the
// session layer's hot paths (micro_test.go):
//
//	go test -run '^$' -bench . -benchmem ./bench
//	go test -run TestSteadyStateAllocs -v ./bench
//
// Neither is part of the programs or the library.
package bench
