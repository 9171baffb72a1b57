package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/sidecar"
)

// minPeerInterval is the shortest keepalive, keepalive timeout, probe or
// check interval the flags take: shorter ones would spin.
const minPeerInterval = 10 * time.Millisecond

// peerFlags are the flags that watch peer sidecars and bring ejected
// endpoints back (docs/sidecar.md, docs/resiliency.md).
type peerFlags struct {
	keepalive, keepaliveTimeout  time.Duration
	probeInterval, checkInterval time.Duration
}

func addPeerFlags(f *pflag.FlagSet) *peerFlags {
	pf := &peerFlags{}
	f.DurationVar(&pf.keepalive, "peer-keepalive", proxy.DefaultPeerKeepalive, "silence on a pooled connection to a peer sidecar after which it is checked (HTTP/2 PING, HTTP/1.1 redial); 0: no checks")
	f.DurationVar(&pf.keepaliveTimeout, "peer-keepalive-timeout", proxy.DefaultPeerKeepaliveTimeout, "how long that check may take before the peer's connections are closed and it is ejected")
	f.DurationVar(&pf.probeInterval, "ejection-probe-interval", discovery.DefaultProbeInterval, "while every endpoint of an app is ejected, one call per interval goes to one of them (its answer puts it back)")
	f.DurationVar(&pf.checkInterval, "ejection-check-interval", discovery.DefaultCheckInterval, "interval of the checks of an ejected endpoint (not a call: its sidecar reports itself and its app ready); a passing check puts it back; 0: no checks")
	return pf
}

// apply validates the flags and sets them in cfg.
func (pf *peerFlags) apply(cfg *sidecar.Config) error {
	check := func(name string, d time.Duration, zeroOK bool) error {
		if d == 0 && zeroOK {
			return nil
		}
		if d < minPeerInterval {
			off := ""
			if zeroOK {
				off = ", or 0 for none"
			}
			return fmt.Errorf("meshd: --%s %s: want at least %s%s", name, d, minPeerInterval, off)
		}
		return nil
	}
	for _, c := range []struct {
		name   string
		d      time.Duration
		zeroOK bool
	}{
		{"peer-keepalive", pf.keepalive, true},
		{"peer-keepalive-timeout", pf.keepaliveTimeout, false},
		{"ejection-probe-interval", pf.probeInterval, false},
		{"ejection-check-interval", pf.checkInterval, true},
	} {
		if err := check(c.name, c.d, c.zeroOK); err != nil {
			return err
		}
	}
	cfg.PeerKeepalive, cfg.PeerKeepaliveTimeout = pf.keepalive, pf.keepaliveTimeout
	if pf.keepalive == 0 {
		cfg.PeerKeepalive = -1 // off (0 is proxy.Config's default)
	}
	cfg.EjectionProbeInterval, cfg.EjectionCheckInterval = pf.probeInterval, pf.checkInterval
	if pf.checkInterval == 0 {
		cfg.EjectionCheckInterval = -1 // off
	}
	return nil
}
