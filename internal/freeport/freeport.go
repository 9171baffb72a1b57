package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

const low = 20000

var (
	mu   sync.Mutex
	next int
	high int
	used = map[int]bool{}
)

// Take returns a port on 127.0.0.1 that was free a moment ago and that this
// process has not handed out before.
func Take() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	if next == 0 {
		high = ephemeralLow()
		next = low + rand.IntN(high-low)
	}
	for range high - low {
		p := next
		if next++; next >= high {
			next = low
		}
		if used[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		_ = l.Close()
		used[p] = true
		return p, nil
	}
	return 0, errors.New("freeport: no free port below the ephemeral range")
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// ip_local_port_range), or 32768; never below low+1024.
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > low+1024 {
				return v
			}
		}
	}
	return 32768
}
