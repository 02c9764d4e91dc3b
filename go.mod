module github.com/anytls-suite/anytls

go 1.26.8

require (
	github.com/anytls/sing-anytls v0.0.11
	github.com/sagernet/sing v0.6.1
	go.uber.org/goleak v1.3.0
)

require golang.org/x/sys v0.30.0 // indirect
