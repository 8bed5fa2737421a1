package jetcqrs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// infraServices are the engines docker-compose.yml runs for the app.
var infraServices = []string{"postgres", "nats", "redis", "elasticsearch", "clickhouse"}

// clusterNodes are the NATS servers of the compose profile "cluster".
var clusterNodes = []string{"nats-1", "nats-2", "nats-3"}

// appEnv is the configuration the app service must be given.
var appEnv = []string{
	"DATABASE_URL", "REDIS_URL", "NATS_URL", "ELASTICSEARCH_URL", "CLICKHOUSE_URL", "JWT_SECRET", "HTTP_ADDR",
}

// TestDockerCompose checks the shape of the local production stack: the
// engines with what jetcqrs needs of them, and an app that starts only once
// they are healthy.
func TestDockerCompose(t *testing.T) {
	t.Parallel()
	compose := loadCompose(t, "docker-compose.yml")

	tests := []composeCheck{
		{"all services exist", func(t *testing.T, c composeFile) {
			for _, name := range append(slices.Clone(infraServices), "app") {
				if _, ok := c.Services[name]; !ok {
					t.Errorf("service %q is missing", name)
				}
			}
		}},
		{"postgres runs with logical decoding", func(t *testing.T, c composeFile) {
			args := c.Services["postgres"].Command
			for _, setting := range []string{"wal_level=logical", "max_replication_slots=32", "max_wal_senders=32"} {
				if !hasFlagValue(args, "-c", setting) {
					t.Errorf("postgres command %q lacks -c %s", args, setting)
				}
			}
		}},
		{"nats is at least 2.11 with JetStream on a volume", func(t *testing.T, c composeFile) {
			nats := c.Services["nats"]
			major, minor, err := imageVersion(nats.Image)
			if err != nil {
				t.Fatalf("nats image: %v", err)
			}
			if major < 2 || major == 2 && minor < 11 {
				t.Errorf("nats image %q: version %d.%d, want >= 2.11", nats.Image, major, minor)
			}
			if !slices.Contains(nats.Command, "-js") && !slices.Contains(nats.Command, "--jetstream") {
				t.Errorf("nats command %q lacks -js", nats.Command)
			}
			if !hasFlagValue(nats.Command, "-sd", "/data") {
				t.Errorf("nats command %q lacks -sd /data", nats.Command)
			}
		}},
		{"app environment is complete", func(t *testing.T, c composeFile) {
			env := c.Services["app"].Environment
			for _, name := range appEnv {
				if env[name] == "" {
					t.Errorf("app environment: %s is not set", name)
				}
			}
			if !strings.HasPrefix(env["DATABASE_URL"], "postgres://") || !strings.Contains(env["DATABASE_URL"], "@postgres:") {
				t.Errorf("app DATABASE_URL %q does not point at the postgres service", env["DATABASE_URL"])
			}
			if !strings.Contains(env["NATS_URL"], "//nats:") {
				t.Errorf("app NATS_URL %q does not point at the nats service", env["NATS_URL"])
			}
		}},
		{"images are pinned to versions the README names", func(t *testing.T, c composeFile) {
			readme, err := os.ReadFile("README.md")
			if err != nil {
				t.Fatal(err)
			}
			for name, service := range c.Services {
				if service.Image == "" {
					continue
				}
				if _, _, err := imageVersion(service.Image); err != nil {
					t.Errorf("service %s: %v", name, err)
				}
				if !strings.Contains(string(readme), "`"+service.Image+"`") {
					t.Errorf("service %s: README.md does not name its image `%s`", name, service.Image)
				}
			}
		}},
		{"nats runs the nats-server the binary embeds", func(t *testing.T, c composeFile) {
			want, err := moduleVersion("go.mod", "github.com/nats-io/nats-server/v2")
			if err != nil {
				t.Fatal(err)
			}
			if tag := imageTag(c.Services["nats"].Image); !strings.HasPrefix(tag, strings.TrimPrefix(want, "v")+"-") {
				t.Errorf("nats image tag %q, want the embedded nats-server %s", tag, want)
			}
		}},
		{"clickhouse runs the release line the tests run on chDB", func(t *testing.T, c composeFile) {
			// chDB's package versions follow the ClickHouse release line of
			// its engine: chDB 26.5.x embeds ClickHouse 26.5.
			chdb, err := shellConstant("scripts/services.sh", "CHDB_VERSION")
			if err != nil {
				t.Fatal(err)
			}
			image := c.Services["clickhouse"].Image
			major, minor, err := imageVersion(image)
			if err != nil {
				t.Fatalf("clickhouse image: %v", err)
			}
			if line := fmt.Sprintf("%d.%d", major, minor); !strings.HasPrefix(chdb, line+".") {
				t.Errorf("clickhouse image %q is release line %s; the tests run chDB %s", image, line, chdb)
			}
		}},
		{"the cluster profile routes three NATS nodes and runs an app on all of them", func(t *testing.T, c composeFile) {
			routes := make([]string, len(clusterNodes))
			for i, node := range clusterNodes {
				routes[i] = "nats://" + node + ":6222"
			}
			volumes := map[string]bool{}
			for _, node := range clusterNodes {
				svc, ok := c.Services[node]
				if !ok {
					t.Fatalf("service %q is missing", node)
				}
				if !slices.Equal(svc.Profiles, []string{"cluster"}) {
					t.Errorf("%s: profiles %q, want [cluster] (the default stack keeps one server)", node, svc.Profiles)
				}
				if svc.Image != c.Services["nats"].Image {
					t.Errorf("%s: image %q, want the single server's %q", node, svc.Image, c.Services["nats"].Image)
				}
				if !slices.Contains(svc.Command, "-js") || !hasFlagValue(svc.Command, "-sd", "/data") ||
					!hasFlagValue(svc.Command, "--name", node) || !hasFlagValue(svc.Command, "--cluster_name", "jetcqrs") ||
					!hasFlagValue(svc.Command, "--cluster", "nats://0.0.0.0:6222") ||
					!hasFlagValue(svc.Command, "--routes", strings.Join(routes, ",")) {
					t.Errorf("%s: command %q lacks JetStream on /data, its name, the cluster name, listen or routes to every node", node, svc.Command)
				}
				if hc := svc.Healthcheck; hc == nil || len(hc.Test) == 0 {
					t.Errorf("%s has no healthcheck", node)
				}
				for _, mount := range svc.Volumes {
					source, _, _ := strings.Cut(mount, ":")
					if _, declared := c.Volumes[source]; declared && !volumes[source] {
						volumes[source] = true
					} else {
						t.Errorf("%s: volume %q is not a named volume of its own", node, source)
					}
				}
			}
			app, single := c.Services["app-cluster"], c.Services["app"]
			if !slices.Equal(app.Profiles, []string{"cluster"}) || app.Build != single.Build || !slices.Equal(app.Command, single.Command) {
				t.Errorf("app-cluster: profiles %q, build %+v, command %q; want [cluster] and the app's build and command", app.Profiles, app.Build, app.Command)
			}
			urls := make([]string, len(clusterNodes))
			for i, node := range clusterNodes {
				urls[i] = "nats://" + node + ":4222"
			}
			for name, value := range single.Environment {
				want := value
				if name == "NATS_URL" {
					want = strings.Join(urls, ",")
				}
				if app.Environment[name] != want {
					t.Errorf("app-cluster environment %s = %q, want %q", name, app.Environment[name], want)
				}
			}
			for _, dep := range append(slices.DeleteFunc(slices.Clone(infraServices), func(s string) bool { return s == "nats" }), clusterNodes...) {
				if app.DependsOn[dep] != "service_healthy" {
					t.Errorf("app-cluster depends_on %s: condition %q, want service_healthy", dep, app.DependsOn[dep])
				}
			}
			if _, ok := app.DependsOn["nats"]; ok {
				t.Error("app-cluster depends on the single nats server")
			}
		}},
		{"app is built from a Dockerfile that builds ./cmd/jetcqrs", func(t *testing.T, c composeFile) {
			build := c.Services["app"].Build
			if build.Context == "" {
				t.Fatal("app has no build context")
			}
			dockerfile := build.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			path := filepath.Join(build.Context, dockerfile)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("app build: %v", err)
			}
			if !buildsCommand(string(data), "./cmd/jetcqrs") {
				t.Errorf("%s has no RUN ... go build ... ./cmd/jetcqrs", path)
			}
		}},
	}
	for _, name := range infraServices {
		tests = append(tests,
			composeCheck{name + " has a healthcheck", func(t *testing.T, c composeFile) {
				hc := c.Services[name].Healthcheck
				if hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
					t.Errorf("service %s has no healthcheck", name)
				}
			}},
			composeCheck{"app waits until " + name + " is healthy", func(t *testing.T, c composeFile) {
				cond, ok := c.Services["app"].DependsOn[name]
				if !ok || cond != "service_healthy" {
					t.Errorf("app depends_on %s: condition %q, want service_healthy", name, cond)
				}
			}},
			composeCheck{name + " keeps its data in a named volume", func(t *testing.T, c composeFile) {
				for _, mount := range c.Services[name].Volumes {
					source, _, ok := strings.Cut(mount, ":")
					if _, declared := c.Volumes[source]; ok && declared {
						return
					}
				}
				t.Errorf("service %s mounts no named volume (volumes %q)", name, c.Services[name].Volumes)
			}},
		)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.check(t, compose)
		})
	}
}

// TestDockerComposeConfig has docker-compose itself read docker-compose.yml:
// it rejects what its schema does not know and warns of unset variables.
func TestDockerComposeConfig(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose is not installed: run scripts/services.sh tests as root (apt-get install docker-compose): %v", err)
	}
	t.Run("docker-compose.yml", func(t *testing.T) {
		t.Parallel()
		if out, err := composeConfig(t, "docker-compose.yml"); err != nil || out != "" {
			t.Errorf("docker-compose config -q: %v\n%s", err, out)
		}
	})
	t.Run("docker-compose.yml --profile cluster", func(t *testing.T) {
		t.Parallel()
		if out, err := composeConfig(t, "docker-compose.yml", "--profile", "cluster"); err != nil || out != "" {
			t.Errorf("docker-compose --profile cluster config -q: %v\n%s", err, out)
		}
	})
	t.Run("a file it must reject", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "compose.yml")
		if err := os.WriteFile(path, []byte("services:\n  app:\n    image: app:1.0\n    health_check: {}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := composeConfig(t, path); err == nil || !strings.Contains(out, "health_check") {
			t.Errorf("docker-compose config -q accepted an unknown option: %v\n%s", err, out)
		}
	})
}

// composeConfig runs docker-compose config -q on path, with flags before the
// command, and returns its output.
func composeConfig(t *testing.T, path string, flags ...string) (string, error) {
	t.Helper()
	args := append([]string{"--project-directory", filepath.Dir(path), "-f", path}, flags...)
	cmd := exec.CommandContext(t.Context(), "docker-compose", append(args, "config", "-q")...)
	cmd.Env = append(os.Environ(), "JWT_SECRET=")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestImageVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		image        string
		major, minor int
		wantErr      bool
	}{
		{image: "nats:2.11", major: 2, minor: 11},
		{image: "nats:2.15-alpine", major: 2, minor: 15},
		{image: "docker.io/library/nats:2.10.22", major: 2, minor: 10},
		{image: "registry:5000/nats:3.0", major: 3, minor: 0},
		{image: "nats", wantErr: true},
		{image: "nats:latest", wantErr: true},
		{image: "nats:2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			t.Parallel()
			major, minor, err := imageVersion(tt.image)
			if (err != nil) != tt.wantErr || !tt.wantErr && (major != tt.major || minor != tt.minor) {
				t.Errorf("imageVersion(%q) = %d, %d, %v; want %d, %d, error %v", tt.image, major, minor, err, tt.major, tt.minor, tt.wantErr)
			}
		})
	}
}

// composeCheck is one assertion on docker-compose.yml.
type composeCheck struct {
	name  string
	check func(t *testing.T, c composeFile)
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string       `yaml:"image"`
	Profiles    []string     `yaml:"profiles"`
	Build       buildSpec    `yaml:"build"`
	Command     stringList   `yaml:"command"`
	Environment environment  `yaml:"environment"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
	DependsOn   dependsOn    `yaml:"depends_on"`
	Volumes     []string     `yaml:"volumes"`
}

type healthcheck struct {
	Test    stringList `yaml:"test"`
	Disable bool       `yaml:"disable"`
}

// stringList is a command in either compose form: a sequence, or one string
// split on spaces.
type stringList []string

func (l *stringList) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind == yaml.ScalarNode {
		*l = strings.Fields(node.Value)
		return nil
	}
	var items []string
	if err := node.Decode(&items); err != nil {
		return err
	}
	*l = items
	return nil
}

// environment is an environment in either compose form: a mapping, or a
// sequence of NAME=value.
type environment map[string]string

func (e *environment) UnmarshalYAML(node *yaml.Node) error {
	*e = environment{}
	if node.Kind == yaml.SequenceNode {
		var items []string
		if err := node.Decode(&items); err != nil {
			return err
		}
		for _, item := range items {
			name, value, _ := strings.Cut(item, "=")
			(*e)[name] = value
		}
		return nil
	}
	var values map[string]string
	if err := node.Decode(&values); err != nil {
		return err
	}
	for name, value := range values {
		(*e)[name] = value
	}
	return nil
}

// dependsOn maps each dependency to its condition; the short (sequence) form
// has no condition, which compose treats as service_started.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(node *yaml.Node) error {
	*d = dependsOn{}
	if node.Kind == yaml.SequenceNode {
		var names []string
		if err := node.Decode(&names); err != nil {
			return err
		}
		for _, name := range names {
			(*d)[name] = "service_started"
		}
		return nil
	}
	var long map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := node.Decode(&long); err != nil {
		return err
	}
	for name, dep := range long {
		(*d)[name] = dep.Condition
	}
	return nil
}

// buildSpec is a build in either compose form: a context path, or a mapping.
type buildSpec struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

func (b *buildSpec) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind == yaml.ScalarNode {
		b.Context = node.Value
		return nil
	}
	type plain buildSpec
	return node.Decode((*plain)(b))
}

func loadCompose(t *testing.T, path string) composeFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// hasFlagValue reports whether args holds flag followed by value.
func hasFlagValue(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return true
		}
	}
	return false
}

var tagVersion = regexp.MustCompile(`^v?(\d+)\.(\d+)`)

// imageTag is the tag of an image reference, or "" when it has none.
func imageTag(image string) string {
	name := image[strings.LastIndex(image, "/")+1:]
	_, tag, _ := strings.Cut(name, ":")
	return tag
}

// imageVersion returns the major and minor version of an image's tag, which
// must start with major.minor.
func imageVersion(image string) (major, minor int, err error) {
	tag := imageTag(image)
	if tag == "" {
		return 0, 0, fmt.Errorf("image %q has no tag; pin a version", image)
	}
	m := tagVersion.FindStringSubmatch(tag)
	if m == nil {
		return 0, 0, fmt.Errorf("image %q: tag %q does not start with major.minor", image, tag)
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, nil
}

// moduleVersion is the version go.mod requires of module.
func moduleVersion(gomod, module string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(fields) >= 2 && fields[0] == module {
			return fields[1], nil
		}
	}
	return "", fmt.Errorf("%s does not require %s", gomod, module)
}

// shellConstant is the value of "readonly name=value" in a shell script.
func shellConstant(script, name string) (string, error) {
	data, err := os.ReadFile(script)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if value, ok := strings.CutPrefix(line, "readonly "+name+"="); ok {
			return value, nil
		}
	}
	return "", fmt.Errorf("%s has no readonly %s", script, name)
}

var goBuildCmd = regexp.MustCompile(`(?m)^\s*RUN\b.*\bgo build\b.*`)

// buildsCommand reports whether a Dockerfile has a RUN instruction that runs
// go build on pkg; continuation lines are joined first.
func buildsCommand(dockerfile, pkg string) bool {
	joined := strings.ReplaceAll(dockerfile, "\\\n", " ")
	for _, line := range goBuildCmd.FindAllString(joined, -1) {
		if slices.Contains(strings.Fields(line), pkg) {
			return true
		}
	}
	return false
}
