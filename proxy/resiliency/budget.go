package resiliency

import (
	"sync/atomic"
	"time"
)

// Retry budget defaults (Linkerd's): retries may add 20% to the requests of
// the last 10 seconds, plus 10 retries per second so that a quiet target can
// still be retried.
const (
	BudgetRatio         = 0.2
	BudgetMinPerSecond  = 10
	budgetWindowSeconds = 10
)

// Budget bounds retries to a share of the requests over a sliding window of
// one-second buckets, so that retries cannot amplify an outage. Lock-free
// and approximate: a bucket being recycled may lose a few counts.
type Budget struct {
	Ratio        float64
	MinPerSecond int64
	buckets      [budgetWindowSeconds]budgetBucket
}

type budgetBucket struct {
	sec     atomic.Int64
	reqs    atomic.Int64
	retries atomic.Int64
}

// NewBudget returns a budget with the default ratio and minimum.
func NewBudget() *Budget {
	return &Budget{Ratio: BudgetRatio, MinPerSecond: BudgetMinPerSecond}
}

func (b *Budget) bucket(sec int64) *budgetBucket {
	k := &b.buckets[sec%budgetWindowSeconds]
	if old := k.sec.Load(); old != sec && k.sec.CompareAndSwap(old, sec) {
		k.reqs.Store(0)
		k.retries.Store(0)
	}
	return k
}

// Request counts one call (its first attempt). A nil Budget counts nothing.
func (b *Budget) Request(now time.Time) {
	if b == nil {
		return
	}
	b.bucket(now.Unix()).reqs.Add(1)
}

// TryRetry takes one retry from the budget; false when it is spent. A nil
// Budget never is.
func (b *Budget) TryRetry(now time.Time) bool {
	if b == nil {
		return true
	}
	sec := now.Unix()
	var reqs, retries int64
	for i := range b.buckets {
		k := &b.buckets[i]
		if s := k.sec.Load(); s > sec-budgetWindowSeconds && s <= sec {
			reqs += k.reqs.Load()
			retries += k.retries.Load()
		}
	}
	if float64(retries) >= b.Ratio*float64(reqs)+float64(b.MinPerSecond*budgetWindowSeconds) {
		return false
	}
	b.bucket(sec).retries.Add(1)
	return true
}
