package admin

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/policy/decisionlog"
)

// Handler serves the endpoint: status is called for every GET of
// PathStatus; recent (nil: none kept) answers PathDecisions.
func Handler(status func() Status, recent *decisionlog.Ring) http.Handler {
	return &handler{status: status, recent: recent}
}

type handler struct {
	status func() Status
	recent *decisionlog.Ring
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "the admin endpoint is read-only: GET only")
		return
	}
	if !LoopbackHost(r.Host) {
		writeError(w, http.StatusForbidden, "the admin endpoint answers requests to a loopback host only")
		return
	}
	switch r.URL.Path {
	case PathStatus:
		writeJSON(w, h.status())
	case PathDecisions:
		var after uint64
		if v := r.URL.Query().Get("after"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				writeError(w, http.StatusBadRequest, "after="+strconv.Quote(v)+": want the number of a decision (0 for all kept)")
				return
			}
			after = n
		}
		writeJSON(w, h.decisions(after))
	default:
		writeError(w, http.StatusNotFound, "no such admin path; see "+PathStatus+" and "+PathDecisions)
	}
}

func (h *handler) decisions(after uint64) Decisions {
	d := Decisions{Decisions: []Decision{}}
	if h.recent == nil {
		return d
	}
	recs, last, missed := h.recent.Since(after)
	d.Last, d.Missed, d.Kept = last, missed, h.recent.Cap()
	for i := range recs {
		r := &recs[i]
		e := r.Entry()
		d.Decisions = append(d.Decisions, Decision{Seq: r.Seq, Time: time.Unix(0, r.Time).UTC(), Source: e.Source,
			Destination: e.Destination, Protocol: e.Protocol, Method: e.Method, Path: e.Path, Query: e.Query,
			Allow: e.Allow, Audit: e.Audit, Reason: e.Reason, Rule: e.Rule})
	}
	return d
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

type errorBody struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

// ErrCode is the errorCode of the endpoint's error answers.
const ErrCode = "ERR_ADMIN"

func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(errorBody{ErrorCode: ErrCode, Message: "admin: " + msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// LoopbackHost reports whether hostport (a Host header, or an address to
// bind) names a loopback address: 127.0.0.0/8, ::1 or localhost.
func LoopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
