package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// auditPolicy logs every request when its response completes (a watch also
// when it starts) at Metadata level: who, verb, object, response code; no
// bodies.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
`

func (e *Env) configureAudit() error {
	policy := filepath.Join(e.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return err
	}
	args := e.testEnv.ControlPlane.APIServer.Configure()
	args.Set("audit-policy-file", policy)
	args.Set("audit-log-path", filepath.Join(e.Dir, "audit.log"))
	args.Set("audit-log-format", "json")
	args.Set("audit-log-mode", "blocking") // written before the response: a test reads it right after
	return nil
}

// AuditEvent is the part of an audit.k8s.io/v1 Event the tests read
// (k8s.io/apiserver/pkg/apis/audit/v1.Event).
type AuditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser,omitempty"`
	RequestURI string `json:"requestURI"`
	ObjectRef  *struct {
		Resource    string `json:"resource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
		Subresource string `json:"subresource"`
	} `json:"objectRef,omitempty"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Username is who the request acted as: the impersonated user if any.
func (ev *AuditEvent) Username() string {
	if ev.ImpersonatedUser != nil {
		return ev.ImpersonatedUser.Username
	}
	return ev.User.Username
}

// AuditEvents reads Dir/audit.log (Options.Audit) and returns the events of
// requests made as username.
func (e *Env) AuditEvents(username string) ([]AuditEvent, error) {
	f, err := os.Open(filepath.Join(e.Dir, "audit.log"))
	if err != nil {
		return nil, fmt.Errorf("audit log (Options.Audit): %w", err)
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var ev AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("audit log line: %w", err)
		}
		if ev.Username() == username {
			out = append(out, ev)
		}
	}
	return out, sc.Err()
}
