package prometheus

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Targets returns the active targets of the scrape pool job (job_name), or
// of every job when job is empty, sorted by scrape URL.
func (s *Server) Targets(ctx context.Context, job string) ([]v1.ActiveTarget, error) {
	res, err := s.API.Targets(ctx)
	if err != nil {
		return nil, err
	}
	var out []v1.ActiveTarget
	for _, t := range res.Active {
		if job == "" || t.ScrapePool == job {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ScrapeURL < out[j].ScrapeURL })
	return out, nil
}

// WaitScraped waits until job has at least one active target and every one
// of them has completed a scrape that started after since, and returns them.
// Prometheus runs a target's scrapes one after another and reports a scrape's
// start time, so a target counts as done once two scrapes have started after
// since: the first has then been appended and committed. The answer also
// says whether each is up; use Down for the failures.
func (s *Server) WaitScraped(ctx context.Context, job string, since time.Time) ([]v1.ActiveTarget, error) {
	first := map[string]time.Time{} // scrape URL -> first scrape start after since
	for {
		targets, err := s.Targets(ctx, job)
		if err != nil {
			return nil, err
		}
		done := len(targets) > 0
		for _, t := range targets {
			if t.LastScrape.Before(since) {
				done = false
				continue
			}
			f, seen := first[t.ScrapeURL]
			if !seen {
				first[t.ScrapeURL] = t.LastScrape
				done = false
			} else if !t.LastScrape.After(f) {
				done = false
			}
		}
		if done {
			return targets, nil
		}
		select {
		case <-ctx.Done():
			return targets, fmt.Errorf("job %q: not every target scraped twice since %s (%d targets: %s): %w",
				job, since.Format(time.RFC3339Nano), len(targets), describe(targets), ctx.Err())
		case <-time.After(s.opts.ScrapeInterval / 4):
		}
	}
}

// Down lists the targets whose last scrape failed, with their error.
func Down(targets []v1.ActiveTarget) []string {
	var out []string
	for _, t := range targets {
		if t.Health != v1.HealthGood {
			out = append(out, fmt.Sprintf("%s (%s): %s", t.ScrapeURL, t.Health, t.LastError))
		}
	}
	return out
}

// Query runs an instant PromQL query now. Warnings are returned as an error:
// a test should not pass on a partial answer.
func (s *Server) Query(ctx context.Context, q string) (model.Value, error) {
	return s.QueryAt(ctx, q, time.Now())
}

// QueryAt runs an instant query evaluated at ts (e.g. right at a scrape's
// timestamp, so irate sees exactly the two samples around some traffic).
func (s *Server) QueryAt(ctx context.Context, q string, ts time.Time) (model.Value, error) {
	v, warnings, err := s.API.Query(ctx, q, ts)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", q, err)
	}
	if len(warnings) > 0 {
		return v, fmt.Errorf("query %q: warnings: %s", q, strings.Join(warnings, "; "))
	}
	return v, nil
}

// QueryVector runs an instant query whose answer must be an instant vector
// (a scalar answer becomes one sample without labels).
func (s *Server) QueryVector(ctx context.Context, q string) (model.Vector, error) {
	v, err := s.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case model.Vector:
		return v, nil
	case *model.Scalar:
		return model.Vector{{Metric: model.Metric{}, Value: v.Value, Timestamp: v.Timestamp}}, nil
	default:
		return nil, fmt.Errorf("query %q: want a vector, got %s", q, v.Type())
	}
}

// WaitScrapedT is WaitScraped for tests: it fails the test when the wait
// times out (30s) or a target is down.
func (s *Server) WaitScrapedT(t testing.TB, job string, since time.Time) []v1.ActiveTarget {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	targets, err := s.WaitScraped(ctx, job, since)
	if err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	if down := Down(targets); len(down) > 0 {
		t.Fatalf("prometheus: job %q has targets down:\n%s", job, strings.Join(down, "\n"))
	}
	return targets
}

// QueryVectorT is QueryVector for tests.
func (s *Server) QueryVectorT(t testing.TB, q string) model.Vector {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := s.QueryVector(ctx, q)
	if err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	return v
}

func describe(targets []v1.ActiveTarget) string {
	parts := make([]string, len(targets))
	for i, t := range targets {
		parts[i] = fmt.Sprintf("%s last=%s health=%s", t.ScrapeURL, t.LastScrape.Format(time.RFC3339Nano), t.Health)
	}
	return strings.Join(parts, ", ")
}
