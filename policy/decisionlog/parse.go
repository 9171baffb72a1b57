package decisionlog

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Messages of the three kinds of entries, as Logger writes them.
const (
	MsgAllow = "policy: allow"
	MsgDeny  = "policy: deny"
	MsgAudit = "policy: audit: would deny"
)

// ParseLine reads one line of a sidecar's log, in slog's text or JSON
// format (--log-format), as Logger wrote it. Anything before the record
// (a prefix such as meshctl's "APP meshd | ") is skipped. ok is false for
// a line that is not a decision; err is set only for a decision line that
// cannot be read.
func ParseLine(line string) (e Entry, ok bool, err error) {
	line = strings.TrimSpace(line)
	if !strings.Contains(line, "policy: ") {
		return Entry{}, false, nil
	}
	var kv map[string]string
	if i := strings.IndexByte(line, '{'); i >= 0 && strings.HasSuffix(line, "}") && (i == 0 || !strings.Contains(line[:i], "msg=")) {
		var m map[string]any
		if json.Unmarshal([]byte(line[i:]), &m) == nil {
			kv = make(map[string]string, len(m))
			for k, v := range m {
				switch v := v.(type) {
				case string:
					kv[k] = v
				case bool:
					kv[k] = strconv.FormatBool(v)
				}
			}
		}
	}
	if kv == nil {
		if i := strings.Index(line, "time="); i > 0 {
			line = line[i:]
		}
		if kv, err = parseText(line); err != nil {
			if !strings.Contains(line, "msg=\"policy: ") {
				return Entry{}, false, nil
			}
			return Entry{}, false, err
		}
	}
	switch kv["msg"] {
	case MsgAllow:
		e.Allow = true
	case MsgDeny:
	case MsgAudit:
		e.Allow, e.Audit = true, true
	default:
		return Entry{}, false, nil
	}
	e.Source, e.Destination, e.Protocol = kv["source"], kv["destination"], kv["protocol"]
	e.Method, e.Path, e.Reason, e.Rule = kv["method"], kv["path"], kv["reason"], kv["rule"]
	if e.Destination == "" || e.Path == "" {
		return Entry{}, false, errors.New("decisionlog: decision without destination or path")
	}
	return e, true, nil
}

// parseText splits slog's text format: key=value pairs separated by
// spaces, a value quoted (Go syntax) when it holds spaces, quotes, '=' or
// control characters.
func parseText(s string) (map[string]string, error) {
	kv := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return kv, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, errors.New("decisionlog: text record: key without value")
		}
		key := s[:eq]
		if strings.ContainsAny(key, " \"") {
			return nil, errors.New("decisionlog: text record: bad key")
		}
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for ; end < len(s); end++ {
				if s[end] == '\\' {
					end++
					continue
				}
				if s[end] == '"' {
					break
				}
			}
			if end >= len(s) {
				return nil, errors.New("decisionlog: text record: unterminated quote")
			}
			v, err := strconv.Unquote(s[:end+1])
			if err != nil {
				return nil, errors.New("decisionlog: text record: bad quoted value")
			}
			val, s = v, s[end+1:]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			val, s = s[:sp], s[sp:]
		}
		kv[key] = val
	}
}
