package helm

// Rendering the chart with the helm binary and decoding what it renders strictly into the
// k8s.io/api types: an unknown or misspelled field is an error, as the API server's strict
// field validation would make it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// KubeVersion is the Kubernetes version the chart is rendered for (helm's built-in default
// is old, and the chart needs the pod-index label of 1.28+).
const KubeVersion = "1.33.0"

// ReleaseName and Namespace of every rendering; "sluice" makes the full name "sluice".
const (
	ReleaseName = "sluice"
	Namespace   = "default"
)

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "helm", "sluice") }

// helmBin is $HELM, else the copy tests/run.sh builds, else helm on the PATH.
func helmBin(t testing.TB) string {
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	built := filepath.Join(repoRoot(t), "target", "tools", "helm-v3.22.0", "helm")
	if _, err := os.Stat(built); err == nil {
		return built
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	t.Fatalf("helm is missing: build it with `GOBIN=$PWD/target/tools/helm-v3.22.0 go install helm.sh/helm/v3/cmd/helm@v3.22.0` " +
		"at the repository root (tests/run.sh does), or set HELM")
	return ""
}

// helmTemplate renders the chart with the values file (relative to the chart) and extra
// --set flags; it returns helm's output and error.
func helmTemplate(t testing.TB, valuesFile string, sets ...string) ([]byte, error) {
	args := []string{"template", ReleaseName, chartDir(t), "--namespace", Namespace, "--kube-version", KubeVersion}
	if valuesFile != "" {
		args = append(args, "-f", filepath.Join(chartDir(t), valuesFile))
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// ServiceMonitor is the part of the Prometheus Operator's CRD the chart renders; decoding into
// it is as strict as into the k8s.io/api types (a field not named here fails).
type ServiceMonitor struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   ObjectMeta         `json:"metadata"`
	Spec       ServiceMonitorSpec `json:"spec"`
}

type ObjectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

type ServiceMonitorSpec struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	NamespaceSelector struct {
		MatchNames []string `json:"matchNames"`
	} `json:"namespaceSelector"`
	Endpoints []struct {
		Port     string `json:"port"`
		Path     string `json:"path"`
		Interval string `json:"interval"`
	} `json:"endpoints"`
}

// Rendered is one rendering, every object decoded.
type Rendered struct {
	StatefulSets    []*appsv1.StatefulSet
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	Pods            []*corev1.Pod
	PDBs            []*policyv1.PodDisruptionBudget
	ServiceMonitors []*ServiceMonitor
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// strictDecode decodes JSON into v, refusing unknown fields and trailing data.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the object")
	}
	return nil
}

// decodeAll splits helm's output into documents and decodes each strictly by its kind.
func decodeAll(t testing.TB, out []byte) *Rendered {
	r := &Rendered{}
	for i, doc := range docSep.Split(string(out), -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		if string(js) == "null" {
			continue // comments only
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch head.APIVersion + "/" + head.Kind {
		case "apps/v1/StatefulSet":
			o := &appsv1.StatefulSet{}
			r.StatefulSets, obj = append(r.StatefulSets, o), o
		case "v1/Service":
			o := &corev1.Service{}
			r.Services, obj = append(r.Services, o), o
		case "v1/ConfigMap":
			o := &corev1.ConfigMap{}
			r.ConfigMaps, obj = append(r.ConfigMaps, o), o
		case "v1/Pod":
			o := &corev1.Pod{}
			r.Pods, obj = append(r.Pods, o), o
		case "policy/v1/PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			r.PDBs, obj = append(r.PDBs, o), o
		case "monitoring.coreos.com/v1/ServiceMonitor":
			o := &ServiceMonitor{}
			r.ServiceMonitors, obj = append(r.ServiceMonitors, o), o
		default:
			t.Fatalf("document %d: the chart renders %s %s, which this test does not know: add it here",
				i, head.APIVersion, head.Kind)
		}
		if err := strictDecode(js, obj); err != nil {
			t.Fatalf("document %d (%s) does not decode strictly: %v\n%s", i, head.Kind, err, doc)
		}
	}
	return r
}

// render renders and decodes, failing the test on any error.
func render(t testing.TB, valuesFile string, sets ...string) *Rendered {
	out, err := helmTemplate(t, valuesFile, sets...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, out)
}

func (r *Rendered) statefulSet(t testing.TB) *appsv1.StatefulSet {
	if len(r.StatefulSets) != 1 {
		t.Fatalf("want one StatefulSet, got %d", len(r.StatefulSets))
	}
	return r.StatefulSets[0]
}

func (r *Rendered) service(t testing.TB, name string) *corev1.Service {
	for _, s := range r.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %q rendered", name)
	return nil
}

func (r *Rendered) configMap(t testing.TB, name string) *corev1.ConfigMap {
	for _, c := range r.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no ConfigMap %q rendered", name)
	return nil
}

// ciValues lists the chart's values matrix, helm/sluice/ci/*.yaml, relative to the chart.
func ciValues(t testing.TB) []string {
	files, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in helm/sluice/ci: %v", err)
	}
	var rel []string
	for _, f := range files {
		rel = append(rel, filepath.Join("ci", filepath.Base(f)))
	}
	return rel
}

// valuesOf reads a values file of the chart as a generic map (defaults not merged).
func valuesOf(t testing.TB, valuesFile string) map[string]any {
	data, err := os.ReadFile(filepath.Join(chartDir(t), valuesFile))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", valuesFile, err)
	}
	return m
}

// lookup walks a values map by keys; nil if absent.
func lookup(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}
