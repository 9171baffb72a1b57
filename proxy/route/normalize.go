package route

import "fmt"

const upperHex = "0123456789ABCDEF"

// literal[c] is true for bytes RFC 3986 allows unescaped in a path segment
// (unreserved, sub-delims, ':' and '@') and for '/'.
var literal = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@/" {
		t[c] = true
	}
	return t
}()

// Normalize returns the canonical escaped form of the method path p (see the
// package documentation). A path without a leading "/" gets one.
func Normalize(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%w: empty path", ErrBadMethod)
	}
	canonical := p[0] == '/'
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: control character 0x%02x at byte %d", ErrBadMethod, c, i)
		case c == '#' || c == '?':
			return "", fmt.Errorf("%w: %q is not allowed in a method", ErrBadMethod, c)
		case c == '\\':
			return "", fmt.Errorf("%w: backslash is not allowed in a method", ErrBadMethod)
		case c == '/':
			if dotOrEmptySegment(p[i+1:]) {
				canonical = false
			}
		case c == '%' || !literal[c]:
			canonical = false
		}
	}
	if canonical {
		return p, nil
	}
	return slowNormalize(p)
}

// dotOrEmptySegment reports whether the segment at the start of s is empty
// (but not the end of the path), ".", "..", or "." or ".." followed by
// ";params" (which slowNormalize refuses).
func dotOrEmptySegment(s string) bool {
	switch {
	case s == "":
		return false // trailing slash is kept
	case s[0] == '/':
		return true
	case s[0] != '.':
		return false
	case len(s) == 1 || s[1] == '/' || s[1] == ';':
		return true
	case s[1] == '.' && (len(s) == 2 || s[2] == '/' || s[2] == ';'):
		return true
	}
	return false
}

// dotParamSegment reports whether seg, read as a servlet container reads
// it (the part before its first ';' is the segment, the rest is path
// parameters), is "." or "..".
func dotParamSegment(seg []byte) bool {
	return (len(seg) >= 2 && seg[0] == '.' && seg[1] == ';') ||
		(len(seg) >= 3 && seg[0] == '.' && seg[1] == '.' && seg[2] == ';')
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func slowNormalize(p string) (string, error) {
	// Pass 1: canonical escaping. '/' and '.' never come out of an escape
	// (encoded slashes and dots are rejected), so the segment structure of
	// buf is the literal one.
	buf := make([]byte, 0, len(p)+8)
	if p[0] != '/' {
		buf = append(buf, '/')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' {
			if i+2 >= len(p) {
				return "", fmt.Errorf("%w: truncated %%-escape at byte %d", ErrBadMethod, i)
			}
			hi, ok1 := unhex(p[i+1])
			lo, ok2 := unhex(p[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("%w: invalid %%-escape %q at byte %d", ErrBadMethod, p[i:i+3], i)
			}
			c = hi<<4 | lo
			i += 2
			switch {
			case c < 0x20 || c == 0x7f:
				return "", fmt.Errorf("%w: encoded control character %%%02X", ErrBadMethod, c)
			case c == '/':
				return "", fmt.Errorf("%w: encoded slash %%2F is not allowed", ErrBadMethod)
			case c == '\\':
				return "", fmt.Errorf("%w: encoded backslash %%5C is not allowed", ErrBadMethod)
			case c == '.':
				return "", fmt.Errorf("%w: encoded dot %%2E is not allowed (path traversal)", ErrBadMethod)
			}
		}
		if literal[c] {
			buf = append(buf, c)
		} else {
			buf = append(buf, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	// Pass 2: remove empty, "." and ".." segments in place (RFC 3986
	// remove_dot_segments, but ".." above the root is an error).
	out := buf[:1] // "/"
	trailing := false
	for i := 1; i <= len(buf); {
		j := i
		for j < len(buf) && buf[j] != '/' {
			j++
		}
		seg := buf[i:j]
		last := j >= len(buf)
		switch {
		case dotParamSegment(seg):
			// Tomcat, Jetty and Spring strip ";params" from a segment and
			// then resolve dot segments: "/public/..;/admin" is "/admin"
			// to them but "/public/..;/admin" to the policy.
			return "", fmt.Errorf("%w: %q: a dot segment with ;parameters is ambiguous (path traversal)", ErrBadMethod, seg)
		case len(seg) == 0:
			trailing = last && len(out) > 1
		case len(seg) == 1 && seg[0] == '.':
			trailing = last && len(out) > 1
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			if len(out) == 1 {
				return "", fmt.Errorf("%w: %q climbs above the root", ErrBadMethod, p)
			}
			k := len(out) - 2 // out ends with "/"
			for k > 0 && out[k] != '/' {
				k--
			}
			out = out[:k+1]
			trailing = last && len(out) > 1
		default:
			out = append(out, seg...)
			out = append(out, '/')
			trailing = false
		}
		i = j + 1
	}
	// out ends with "/" unless it is just "/"; drop it unless the path
	// ended in a directory.
	if len(out) > 1 && !trailing {
		out = out[:len(out)-1]
	}
	return string(out), nil
}
