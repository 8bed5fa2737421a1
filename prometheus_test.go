package jetcqrs_test

import (
	"os/exec"
	"testing"
)

// TestPrometheusRules checks deploy/prometheus: the scrape configuration
// and the alert rules are valid, and every alert fires on the series that
// describe its condition and on no healthy neighbour (alerts_test.yml).
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: `bash scripts/services.sh tests` installs it " +
			"(or `apt-get install --no-install-recommends prometheus` on Debian)")
	}
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
