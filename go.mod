module github.com/anytls-suite/anytls

go 1.26.8
