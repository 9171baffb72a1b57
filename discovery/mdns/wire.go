package mdns

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
)

// txtVersion is the version of the TXT layout; records of other versions
// are ignored, so a future layout can run beside this one.
const txtVersion = "1"

// cacheFlush is the mDNS cache-flush bit of the record class (RFC 6762
// 10.2): the unique records (SRV, TXT, A) replace what receivers cached.
const cacheFlush = 1 << 15

// record is one announced instance, as it travels in TXT:
//
//	v=1 app=orders ns=default addr=10.0.0.5:50002 health=1
type record struct {
	name    string // instance DNS name, lower case: label.service.local.
	target  discovery.Target
	addr    string
	healthy bool
}

// records returns the answer section announcing r with ttl seconds (0: a
// goodbye): PTR service→instance, SRV instance→host:port, TXT, and the
// host's A or AAAA when the advertised host is an IP address.
func (r *record) records(service string, ttl uint32) []dns.RR {
	host, portStr, _ := net.SplitHostPort(r.addr)
	port, _ := strconv.ParseUint(portStr, 10, 16)
	hostName := strings.TrimSuffix(r.name, service) + "local." // label.local.
	health := "0"
	if r.healthy {
		health = "1"
	}
	rrs := []dns.RR{
		&dns.PTR{Hdr: dns.RR_Header{Name: service, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: r.name},
		&dns.SRV{Hdr: dns.RR_Header{Name: r.name, Rrtype: dns.TypeSRV, Class: dns.ClassINET | cacheFlush, Ttl: ttl},
			Port: uint16(port), Target: hostName},
		&dns.TXT{Hdr: dns.RR_Header{Name: r.name, Rrtype: dns.TypeTXT, Class: dns.ClassINET | cacheFlush, Ttl: ttl},
			Txt: []string{"v=" + txtVersion, "app=" + r.target.AppID, "ns=" + r.target.Namespace,
				"addr=" + r.addr, "health=" + health}},
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() {
			rrs = append(rrs, &dns.A{Hdr: dns.RR_Header{Name: hostName, Rrtype: dns.TypeA, Class: dns.ClassINET | cacheFlush, Ttl: ttl},
				A: ip.AsSlice()})
		} else {
			rrs = append(rrs, &dns.AAAA{Hdr: dns.RR_Header{Name: hostName, Rrtype: dns.TypeAAAA, Class: dns.ClassINET | cacheFlush, Ttl: ttl},
				AAAA: ip.AsSlice()})
		}
	}
	return rrs
}

// seen is what one response says about one instance.
type seen struct {
	rec     record
	ttl     uint32 // 0: goodbye
	goodbye bool
}

// parseResponse extracts the instances of service from an mDNS response.
// TXT records carry the instance; a PTR or TXT with TTL 0 is a goodbye.
// Records that do not validate (bad app ID, namespace or address, another
// TXT version) are ignored: a peer on the network cannot inject garbage
// into the cache. service is lower case and fully qualified.
func parseResponse(m *dns.Msg, service string) []seen {
	var out []seen
	suffix := "." + service
	for _, sec := range [][]dns.RR{m.Answer, m.Extra} {
		for _, rr := range sec {
			switch rr := rr.(type) {
			case *dns.PTR:
				if rr.Hdr.Ttl == 0 && strings.EqualFold(rr.Hdr.Name, service) {
					out = append(out, seen{rec: record{name: strings.ToLower(rr.Ptr)}, goodbye: true})
				}
			case *dns.TXT:
				name := strings.ToLower(rr.Hdr.Name)
				if !strings.HasSuffix(name, suffix) || len(name) == len(suffix) {
					continue
				}
				if rr.Hdr.Ttl == 0 {
					out = append(out, seen{rec: record{name: name}, goodbye: true})
					continue
				}
				rec, ok := parseTXT(rr.Txt)
				if !ok {
					continue
				}
				rec.name = name
				out = append(out, seen{rec: rec, ttl: rr.Hdr.Ttl})
			}
		}
	}
	return out
}

// parseTXT validates the TXT strings of an instance.
func parseTXT(txt []string) (record, bool) {
	var r record
	var v, health string
	for _, kv := range txt {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "v":
			v = val
		case "app":
			r.target.AppID = val
		case "ns":
			r.target.Namespace = val
		case "addr":
			r.addr = val
		case "health":
			health = val
		}
	}
	if v != txtVersion || (health != "0" && health != "1") {
		return r, false
	}
	r.healthy = health == "1"
	if certs.ValidateAppID(r.target.AppID) != nil || certs.ValidateNamespace(r.target.Namespace) != nil {
		return r, false
	}
	return r, validAddr(r.addr)
}

// validAddr accepts IP:port with a port in 1..65535 (the TXT address is
// always an IP address or a DNS name the sidecar was told to advertise).
func validAddr(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strings.TrimLeft(port, "0123456789") != "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return discovery.ValidHostname(host)
}

// asksFor reports whether query m asks for the records of service or of
// instance (both lower case, fully qualified).
func asksFor(m *dns.Msg, service, instance string) bool {
	for _, q := range m.Question {
		name := strings.ToLower(q.Name)
		switch {
		case name == service && (q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY):
			return true
		case instance != "" && name == instance &&
			(q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY):
			return true
		}
	}
	return false
}
