package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// pathLoad is the load of the policy comparison: fortio sends one URL, so
// a policy decision cache would answer every call after the first and the
// row would measure the cache. pathLoad gives every call a REST path with
// an id, /items/{id}, with fortio's shape otherwise: conns keep-alive
// HTTP/1.1 connections, a 1 KiB POST, a fixed rate spread evenly over the
// connections (as fortio's -uniform) or as fast as the answers come.
// The ids come from one sequence for the whole run (seq): with paths 0
// no path repeats in the run, so no decision comes from the sidecar's
// decision cache (it holds 16,384 per policy snapshot: a fixed set of
// 10,000 paths would all be cached after its first pass, 10 s at
// 1000 req/s); with paths N the ids go round N distinct paths on a prime
// stride. Percentiles are exact (every latency kept). Its own CPU costs
// more per call than fortio's, so its rows are read against each other
// (the meshd-paths row is the same load without policy and tracing),
// never against fortio's rows.

const pathStride = 7919 // prime: the ids go round any paths N not a multiple of it

type loadStats struct {
	requests, errors int64
	elapsed          time.Duration
	latencies        []time.Duration // sorted
}

func (s *loadStats) pct(p float64) float64 {
	if len(s.latencies) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(s.latencies)))
	i = min(i, len(s.latencies)-1)
	return float64(s.latencies[i].Microseconds()) / 1e3
}

// pathLoad runs the load against base+"/items/{id}" for d at qps (0: max),
// the ids from seq over paths distinct paths (0: every id new).
func pathLoad(ctx context.Context, base string, seq *atomic.Uint64, paths, conns, qps, size int, d time.Duration) (*loadStats, error) {
	tr := &http.Transport{
		MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	payload := bytes.Repeat([]byte{'x'}, size)
	prefix := base + "/items/"
	var errs atomic.Int64
	var firstErr error
	var errOnce sync.Once
	per := make([][]time.Duration, conns)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			var interval time.Duration
			if qps > 0 {
				interval = time.Duration(float64(time.Second) * float64(conns) / float64(qps))
			}
			due := start.Add(time.Duration(w) * interval / time.Duration(conns))
			for ctx.Err() == nil {
				if interval > 0 {
					if wait := time.Until(due); wait > 0 {
						time.Sleep(wait)
					}
				}
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				id := seq.Add(1)
				if paths > 0 {
					id = id * pathStride % uint64(paths)
				}
				url := prefix + strconv.FormatUint(id, 10)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				req.Header.Set("Content-Type", "application/octet-stream")
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: %s", url, resp.Status)
					}
				}
				lat = append(lat, time.Since(t0))
				if err != nil {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
				due = due.Add(interval)
			}
			per[w] = lat
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	s := &loadStats{elapsed: time.Since(start), errors: errs.Load()}
	for _, l := range per {
		s.latencies = append(s.latencies, l...)
	}
	slices.Sort(s.latencies)
	s.requests = int64(len(s.latencies))
	if s.requests == 0 && firstErr != nil {
		return nil, fmt.Errorf("path load: %w", firstErr)
	}
	if s.errors > 0 {
		fmt.Fprintf(os.Stderr, "pairbench: path load: %d of %d calls failed, first: %v\n", s.errors, s.requests, firstErr)
	}
	return s, nil
}
