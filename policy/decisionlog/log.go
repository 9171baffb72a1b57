package decisionlog

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// Entry is one decision.
type Entry struct {
	Source      string // caller SPIFFE ID ("" without mTLS)
	Destination string // "app.namespace"
	Protocol    string
	Method      string
	Path        string
	// Query is the raw query string: kept in the Ring, not written to the
	// log.
	Query string
	Allow bool
	// Audit marks an allow that enforcing would have denied.
	Audit bool
	// Reason is the policy's reason (denials) and Rule the deciding rule
	// ("file:line" or a description).
	Reason, Rule string
}

// Logger writes entries to slog. The zero value is unusable; use New.
type Logger struct {
	log         *slog.Logger
	sampleEvery uint64
	n           atomic.Uint64
	allows      atomic.Uint64
	denies      atomic.Uint64
	audits      atomic.Uint64
	ring        *Ring // nil: recent decisions are not kept
}

// Option configures a Logger.
type Option func(*Logger)

// WithRecent keeps the last n decisions, every one (allows too), in a Ring
// (Recent); n <= 0 keeps none.
func WithRecent(n int) Option {
	return func(l *Logger) {
		if n > 0 {
			l.ring = NewRing(n)
		}
	}
}

// New returns a Logger writing to log (slog.Default() if nil). One allow
// in sampleEvery is logged; 0 logs no allows, 1 logs all.
func New(log *slog.Logger, sampleEvery uint64, opts ...Option) *Logger {
	if log == nil {
		log = slog.Default()
	}
	l := &Logger{log: log, sampleEvery: sampleEvery}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Recent is the Ring of recent decisions, nil when none are kept.
func (l *Logger) Recent() *Ring { return l.ring }

// Keep stamps rec with the time and keeps it in the Ring of recent
// decisions, if there is one. It allocates nothing.
func (l *Logger) Keep(rec *Record) {
	if l.ring == nil {
		return
	}
	rec.Time = now()
	l.ring.Add(rec)
}

// Allow counts an allow and logs it if it is sampled. The entry is built
// by mk only when it is logged, so the common path does not allocate.
func (l *Logger) Allow(ctx context.Context, mk func() Entry) {
	l.allows.Add(1)
	if l.sampleEvery == 0 || l.n.Add(1)%l.sampleEvery != 0 {
		return
	}
	l.write(ctx, slog.LevelInfo, mk())
}

// Deny counts and logs a denial.
func (l *Logger) Deny(ctx context.Context, e Entry) {
	l.denies.Add(1)
	l.write(ctx, slog.LevelWarn, e)
}

// Audit counts and logs an allow that enforcing would have denied.
func (l *Logger) Audit(ctx context.Context, e Entry) {
	l.audits.Add(1)
	e.Audit = true
	l.write(ctx, slog.LevelWarn, e)
}

func (l *Logger) write(ctx context.Context, lv slog.Level, e Entry) {
	msg := "policy: allow"
	switch {
	case e.Audit:
		msg = "policy: audit: would deny"
	case !e.Allow:
		msg = "policy: deny"
	}
	l.log.LogAttrs(ctx, lv, msg,
		slog.String("source", e.Source), slog.String("destination", e.Destination),
		slog.String("protocol", e.Protocol), slog.String("method", e.Method), slog.String("path", e.Path),
		slog.Bool("allow", e.Allow), slog.String("reason", e.Reason), slog.String("rule", e.Rule))
}

// Counts returns the number of allows, denials and audit-mode would-denies
// so far.
func (l *Logger) Counts() (allows, denies, audits uint64) {
	return l.allows.Load(), l.denies.Load(), l.audits.Load()
}
