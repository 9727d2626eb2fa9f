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
