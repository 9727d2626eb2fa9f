package workloadtable

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

type countingReviewer struct{ calls atomic.Int64 }

func (c *countingReviewer) Review(_ context.Context, token string) (string, error) {
	c.calls.Add(1)
	if token == "good" {
		return "system:serviceaccount:shop:frontend", nil
	}
	return "", errors.New("token not authenticated")
}

// TestReviewCache: reconnects with one token cost one TokenReview per TTL;
// a flood of distinct bad tokens is cut by the review rate limit and the
// cache stays within MaxEntries.
func TestReviewCache(t *testing.T) {
	now := time.Unix(1000, 0)
	next := &countingReviewer{}
	c := &CachedReviewer{Next: next, MaxEntries: 100, Limit: rate.NewLimiter(0, 200), Now: func() time.Time { return now }}
	ctx := context.Background()
	for range 1000 {
		if u, err := c.Review(ctx, "good"); err != nil || u == "" {
			t.Fatal(u, err)
		}
	}
	if n := next.calls.Load(); n != 1 {
		t.Fatalf("1000 reconnects cost %d reviews, want 1", n)
	}
	now = now.Add(31 * time.Second)
	_, _ = c.Review(ctx, "good")
	if n := next.calls.Load(); n != 2 {
		t.Fatalf("after the TTL: %d reviews, want 2", n)
	}
	// Bad token: cached negatively for 5s.
	for range 100 {
		if _, err := c.Review(ctx, "bad"); err == nil {
			t.Fatal("bad token accepted")
		}
	}
	if n := next.calls.Load(); n != 3 {
		t.Fatalf("100 bad attempts cost %d reviews, want 1 more", n-2)
	}
	// Flood of distinct tokens: the burst (200, no refill) bounds reviews.
	limited := 0
	for i := range 10000 {
		_, err := c.Review(ctx, fmt.Sprintf("forged-%d", i))
		if errors.Is(err, ErrReviewRateLimited) {
			limited++
		}
	}
	reviews, hits, size := c.Stats()
	t.Logf("10,000 distinct forged tokens: %d reached the API server, %d rate-limited; cache %d entries (max 100); totals reviews=%d hits=%d",
		next.calls.Load()-3, limited, size, reviews, hits)
	if next.calls.Load() > 3+200 || size > 100 {
		t.Fatalf("reviews %d, cache %d", next.calls.Load(), size)
	}
	// A valid token still works when its entry was evicted and the budget is spent: it is rate-limited, not denied.
	if _, err := c.Review(ctx, "good"); err != nil && !errors.Is(err, ErrReviewRateLimited) {
		t.Fatalf("good token: %v", err)
	}
}

// slowReviewer answers after release is closed, counting calls.
type slowReviewer struct {
	calls   atomic.Int64
	release chan struct{}
}

func (s *slowReviewer) Review(ctx context.Context, token string) (string, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if token == "good" {
		return "system:serviceaccount:shop:frontend", nil
	}
	return "", errors.New("token not authenticated")
}

// TestReviewCacheCoalesces: streams that present one token at the same
// time (a proxy reconnecting, or an attacker opening many streams at once)
// cost one TokenReview, and all get its answer; a waiter whose review's
// caller gave up asks again rather than taking a non-answer.
func TestReviewCacheCoalesces(t *testing.T) {
	for _, token := range []string{"good", "bad"} {
		next := &slowReviewer{release: make(chan struct{})}
		c := &CachedReviewer{Next: next}
		const n = 50
		errs := make(chan error, n)
		for range n {
			go func() {
				u, err := c.Review(context.Background(), token)
				if (token == "good") != (err == nil && u != "") {
					err = fmt.Errorf("token %s: user %q, error %v", token, u, err)
				} else {
					err = nil
				}
				errs <- err
			}()
		}
		for next.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // the others queue behind the one in flight
		close(next.release)
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if got := next.calls.Load(); got != 1 {
			t.Errorf("token %s: %d concurrent streams cost %d reviews, want 1", token, n, got)
		}
	}

	next := &slowReviewer{release: make(chan struct{})}
	c := &CachedReviewer{Next: next}
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := c.Review(ctx, "good"); first <- err }()
	for next.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() { _, err := c.Review(context.Background(), "good"); second <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(next.release)
	if err := <-second; err != nil {
		t.Fatalf("the waiter took its predecessor's non-answer: %v", err)
	}
	if got := next.calls.Load(); got != 2 {
		t.Errorf("%d reviews, want 2 (the waiter asked again)", got)
	}
}
