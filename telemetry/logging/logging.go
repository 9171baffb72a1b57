package logging

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ErrFormat is returned for a log format other than text or json.
var ErrFormat = errors.New("logging: want text or json")

// New returns a logger writing to w. level is debug, info, warn or error
// (slog's level names, with an optional offset such as "info+2"); format is
// text or json, in any case.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("logging: level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("format %q: %w", format, ErrFormat)
}
