package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// open reads a scrape over HTTP; Close closes the body and ends the
// request's deadline; an answer other than 200 is an error naming it.
func TestOpenHTTP(t *testing.T) {
	const body = "istio_requests_total{response_code=\"200\"} 3\n"
	mux := http.NewServeMux()
	mux.HandleFunc("/stats/prometheus", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	rc, err := open(srv.URL + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if string(got) != body {
		t.Errorf("read %q, want %q", got, body)
	}
	rb := rc.(*responseBody)
	if rb.resp.Request.Context().Err() == nil {
		t.Error("Close left the request's context running")
	}

	if _, err := open(srv.URL + "/missing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a 404 scrape: err = %v, want one naming the status", err)
	}
}
