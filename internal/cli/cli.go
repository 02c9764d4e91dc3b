// Package cli holds what both programs share: the log level flag and the
// logger it configures.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// ParseLevel turns "debug", "info", "warn" or "error" into a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// NewLogger returns a text logger on stderr at the given level.
func NewLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Fatal prints an error the way both programs report a bad start, and exits.
func Fatal(prog string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
	os.Exit(1)
}

// Start handles what every program does with its parsed flags: exit 0 after
// -h, report a bad flag and exit 1, print the version and exit 0 after
// -version. It returns only when the program should run.
func Start(prog, version string, parseErr error, wantVersion bool) {
	if errors.Is(parseErr, flag.ErrHelp) {
		os.Exit(0)
	}
	if parseErr != nil {
		Fatal(prog, parseErr)
	}
	if wantVersion {
		fmt.Println(prog, version)
		os.Exit(0)
	}
}
