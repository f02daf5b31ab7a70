package validate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Manifest is the decoded content of one multi-document YAML file.
type Manifest struct {
	Secrets         []*corev1.Secret
	Deployments     []*appsv1.Deployment
	NetworkPolicies []*networkingv1.NetworkPolicy
	Services        []*corev1.Service
}

// newObject returns an empty object of the Go type for apiVersion and kind, or nil for a kind
// this checker does not know (which is an error: an unknown kind is most often a typo).
func newObject(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "v1 Secret":
		return &corev1.Secret{}
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "v1 Service":
		return &corev1.Service{}
	}
	return nil
}

// Decode splits data into YAML documents and decodes each strictly: unknown fields, fields
// spelled with the wrong case, duplicate keys, and values of the wrong type (a number where the
// API wants a string, a malformed quantity or base64) are errors, each naming its document.
// Empty documents (comments only) are skipped.
func Decode(data []byte) (*Manifest, error) {
	m := &Manifest{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var errs []error
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		// YAML 1.1, as kubectl reads it: 0400 is octal.
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", n, err))
			continue
		}
		if string(bytes.TrimSpace(js)) == "null" {
			n--
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", n, err))
			continue
		}
		obj := newObject(tm.APIVersion, tm.Kind)
		if obj == nil {
			errs = append(errs, fmt.Errorf("document %d: unknown apiVersion %q kind %q", n, tm.APIVersion, tm.Kind))
			continue
		}
		strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", n, tm.Kind, err))
			continue
		}
		for _, e := range strict {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", n, tm.Kind, e))
		}
		switch o := obj.(type) {
		case *corev1.Secret:
			m.Secrets = append(m.Secrets, o)
		case *appsv1.Deployment:
			m.Deployments = append(m.Deployments, o)
		case *networkingv1.NetworkPolicy:
			m.NetworkPolicies = append(m.NetworkPolicies, o)
		case *corev1.Service:
			m.Services = append(m.Services, o)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// DecodeFile reads and decodes the file at path.
func DecodeFile(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(data)
}

// Check reports, all at once, what is wrong with a decoded manifest: broken references and
// names (a subset of the API server's validation) and missing hardening (this project's policy).
func (m *Manifest) Check() error {
	var errs field.ErrorList
	secrets := map[string]*corev1.Secret{}
	for i, s := range m.Secrets {
		p := field.NewPath("Secret").Key(s.Name)
		errs = append(errs, checkMeta(s.ObjectMeta, field.NewPath("Secret").Index(i).Child("metadata"))...)
		secrets[s.Name] = s
		switch s.Type {
		case corev1.SecretTypeTLS:
			for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
				if _, ok := s.Data[k]; !ok {
					errs = append(errs, field.Required(p.Child("data").Key(k), "a kubernetes.io/tls Secret needs it"))
				}
			}
		case "", corev1.SecretTypeOpaque:
		default:
			errs = append(errs, field.NotSupported(p.Child("type"), s.Type, []string{string(corev1.SecretTypeOpaque), string(corev1.SecretTypeTLS)}))
		}
		for k, v := range s.Data {
			for _, msg := range validation.IsConfigMapKey(k) {
				errs = append(errs, field.Invalid(p.Child("data").Key(k), k, msg))
			}
			// An example manifest must never carry a real key.
			if bytes.Contains(v, []byte("PRIVATE KEY")) {
				errs = append(errs, field.Forbidden(p.Child("data").Key(k), "holds a real private key: example manifests carry placeholders only; create Secrets with kubectl create secret"))
			}
		}
		for k, v := range s.StringData {
			if strings.Contains(v, "PRIVATE KEY") {
				errs = append(errs, field.Forbidden(p.Child("stringData").Key(k), "holds a real private key: example manifests carry placeholders only"))
			}
		}
	}
	for i, d := range m.Deployments {
		errs = append(errs, checkDeployment(d, field.NewPath("Deployment").Index(i), secrets)...)
	}
	for i, np := range m.NetworkPolicies {
		p := field.NewPath("NetworkPolicy").Index(i)
		errs = append(errs, checkMeta(np.ObjectMeta, p.Child("metadata"))...)
		if _, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil {
			errs = append(errs, field.Invalid(p.Child("spec", "podSelector"), np.Spec.PodSelector, err.Error()))
		}
		for j, rule := range np.Spec.Ingress {
			for k, port := range rule.Ports {
				if port.Port != nil {
					errs = append(errs, checkPort(*port.Port, p.Child("spec", "ingress").Index(j).Child("ports").Index(k).Child("port"))...)
				}
			}
		}
	}
	for i, svc := range m.Services {
		errs = append(errs, m.checkService(svc, field.NewPath("Service").Index(i))...)
	}
	return errs.ToAggregate()
}

// checkService checks that a Service selects the pods of a Deployment in the manifest, that its
// target ports are ports those pods name or numbers, and that its session affinity is valid.
func (m *Manifest) checkService(svc *corev1.Service, p *field.Path) field.ErrorList {
	errs := checkMeta(svc.ObjectMeta, p.Child("metadata"))
	var pods *corev1.PodTemplateSpec
	for _, d := range m.Deployments {
		if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			pods = &d.Spec.Template
			break
		}
	}
	if pods == nil {
		errs = append(errs, field.NotFound(p.Child("spec", "selector"), svc.Spec.Selector))
	}
	switch svc.Spec.SessionAffinity {
	case "", corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP:
	default:
		errs = append(errs, field.NotSupported(p.Child("spec", "sessionAffinity"), svc.Spec.SessionAffinity, []string{"None", "ClientIP"}))
	}
	for j, port := range svc.Spec.Ports {
		pp := p.Child("spec", "ports").Index(j)
		errs = append(errs, checkPort(intstr.FromInt32(port.Port), pp.Child("port"))...)
		if port.TargetPort.Type != intstr.String || pods == nil {
			continue
		}
		named := false
		for _, c := range pods.Spec.Containers {
			for _, cp := range c.Ports {
				named = named || cp.Name == port.TargetPort.StrVal
			}
		}
		if !named {
			errs = append(errs, field.NotFound(pp.Child("targetPort"), port.TargetPort.StrVal))
		}
	}
	return errs
}

func checkMeta(meta metav1.ObjectMeta, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if meta.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	for _, msg := range validation.IsDNS1123Subdomain(meta.Name) {
		errs = append(errs, field.Invalid(p.Child("name"), meta.Name, msg))
	}
	errs = append(errs, metavalidation.ValidateLabels(meta.Labels, p.Child("labels"))...)
	return errs
}

func checkPort(port intstr.IntOrString, p *field.Path) field.ErrorList {
	var msgs []string
	if port.Type == intstr.Int {
		msgs = validation.IsValidPortNum(port.IntValue())
	} else {
		msgs = validation.IsValidPortName(port.StrVal)
	}
	var errs field.ErrorList
	for _, msg := range msgs {
		errs = append(errs, field.Invalid(p, port.String(), msg))
	}
	return errs
}

func checkDeployment(d *appsv1.Deployment, p *field.Path, secrets map[string]*corev1.Secret) field.ErrorList {
	errs := checkMeta(d.ObjectMeta, p.Child("metadata"))
	spec := p.Child("spec")
	if d.Spec.Selector == nil {
		errs = append(errs, field.Required(spec.Child("selector"), ""))
	} else if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil {
		errs = append(errs, field.Invalid(spec.Child("selector"), d.Spec.Selector, err.Error()))
	} else if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), d.Spec.Template.Labels, "does not match spec.selector"))
	}
	errs = append(errs, metavalidation.ValidateLabels(d.Spec.Template.Labels, spec.Child("template", "metadata", "labels"))...)
	errs = append(errs, checkPodSpec(&d.Spec.Template.Spec, spec.Child("template", "spec"), secrets)...)
	return errs
}

// checkPodSpec checks the volumes, then each container against them, with the pod's security
// context as the one the containers inherit.
func checkPodSpec(ps *corev1.PodSpec, p *field.Path, secrets map[string]*corev1.Secret) field.ErrorList {
	volumes, errs := checkVolumes(ps.Volumes, p.Child("volumes"), secrets)
	podSC := ps.SecurityContext
	if podSC == nil {
		podSC = &corev1.PodSecurityContext{}
	}
	names := map[string]bool{}
	for i := range ps.Containers {
		c := &ps.Containers[i]
		cp := p.Child("containers").Index(i)
		if names[c.Name] {
			errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
		}
		names[c.Name] = true
		errs = append(errs, checkContainer(c, cp, volumes, p.Child("volumes"), secrets)...)
		errs = append(errs, checkHardening(c, podSC, cp)...)
	}
	return errs
}

// checkVolumes checks the pod's volumes (names unique DNS labels, secret volumes well formed)
// and returns them by name for the containers' mounts.
func checkVolumes(vs []corev1.Volume, p *field.Path, secrets map[string]*corev1.Secret) (map[string]*corev1.Volume, field.ErrorList) {
	var errs field.ErrorList
	volumes := map[string]*corev1.Volume{}
	for i := range vs {
		v := &vs[i]
		vp := p.Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes[v.Name] != nil {
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes[v.Name] = v
		if v.Secret != nil {
			errs = append(errs, checkSecretVolume(v.Secret, vp.Child("secret"), secrets)...)
		}
	}
	return volumes, errs
}

// checkSecretVolume checks a secret volume: a mode that is a file mode, a named Secret, items
// that exist in it (when the manifest defines it) and relative item paths.
func checkSecretVolume(s *corev1.SecretVolumeSource, p *field.Path, secrets map[string]*corev1.Secret) field.ErrorList {
	var errs field.ErrorList
	if s.DefaultMode != nil && (*s.DefaultMode < 0 || *s.DefaultMode > 0o777) {
		errs = append(errs, field.Invalid(p.Child("defaultMode"), *s.DefaultMode, "must be a file mode from 0000 to 0777"))
	}
	secret, defined := secrets[s.SecretName]
	if s.SecretName == "" {
		errs = append(errs, field.Required(p.Child("secretName"), ""))
	}
	for j, item := range s.Items {
		if defined {
			if _, ok := secret.Data[item.Key]; !ok {
				if _, ok := secret.StringData[item.Key]; !ok {
					errs = append(errs, field.NotFound(p.Child("items").Index(j).Child("key"), item.Key))
				}
			}
		}
		if item.Path == "" || strings.HasPrefix(item.Path, "/") || slices.Contains(strings.Split(item.Path, "/"), "..") {
			errs = append(errs, field.Invalid(p.Child("items").Index(j).Child("path"), item.Path, "must be a relative path without .."))
		}
	}
	return errs
}

// checkContainer checks one container's name, image, environment, ports, mounts and probes.
// volumesPath locates the pod's volumes, for errors about a key volume's mode.
func checkContainer(c *corev1.Container, cp *field.Path, volumes map[string]*corev1.Volume, volumesPath *field.Path, secrets map[string]*corev1.Secret) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(c.Name) {
		errs = append(errs, field.Invalid(cp.Child("name"), c.Name, msg))
	}
	if c.Image == "" {
		errs = append(errs, field.Required(cp.Child("image"), ""))
	}
	for j, e := range c.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			errs = append(errs, field.Invalid(cp.Child("env").Index(j).Child("name"), e.Name, msg))
		}
	}
	portNames := map[string]bool{}
	for j, port := range c.Ports {
		pp := cp.Child("ports").Index(j)
		errs = append(errs, checkPort(intstr.FromInt32(port.ContainerPort), pp.Child("containerPort"))...)
		if port.Name != "" {
			errs = append(errs, checkPort(intstr.FromString(port.Name), pp.Child("name"))...)
			portNames[port.Name] = true
		}
	}
	errs = append(errs, checkMounts(c.VolumeMounts, cp.Child("volumeMounts"), volumes, volumesPath, secrets)...)
	errs = append(errs, checkProbes(c, cp, portNames)...)
	return errs
}

// checkMounts checks a container's volume mounts: each names a volume, at a distinct absolute
// path, and (our policy) a volume holding a private key is mounted read-only with mode 0400.
func checkMounts(vms []corev1.VolumeMount, p *field.Path, volumes map[string]*corev1.Volume, volumesPath *field.Path, secrets map[string]*corev1.Secret) field.ErrorList {
	var errs field.ErrorList
	mounts := map[string]bool{}
	for j, vm := range vms {
		mp := p.Index(j)
		if volumes[vm.Name] == nil {
			errs = append(errs, field.NotFound(mp.Child("name"), vm.Name))
		}
		if !strings.HasPrefix(vm.MountPath, "/") {
			errs = append(errs, field.Invalid(mp.Child("mountPath"), vm.MountPath, "must be an absolute path"))
		}
		if mounts[vm.MountPath] {
			errs = append(errs, field.Duplicate(mp.Child("mountPath"), vm.MountPath))
		}
		mounts[vm.MountPath] = true
		if v := volumes[vm.Name]; v != nil && v.Secret != nil && secretHoldsKey(v.Secret, secrets) {
			if !vm.ReadOnly {
				errs = append(errs, field.Invalid(mp.Child("readOnly"), vm.ReadOnly, "a volume holding a private key must be mounted read-only"))
			}
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400 {
				errs = append(errs, field.Invalid(volumesPath.Key(v.Name).Child("secret", "defaultMode"), v.Secret.DefaultMode, "a volume holding a private key must have defaultMode 0400"))
			}
		}
	}
	return errs
}

// checkProbes checks that each HTTP probe targets a valid port, and a named one that the
// container declares.
func checkProbes(c *corev1.Container, cp *field.Path, portNames map[string]bool) field.ErrorList {
	var errs field.ErrorList
	for _, probe := range []struct {
		name string
		p    *corev1.Probe
	}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}, {"startupProbe", c.StartupProbe}} {
		if probe.p == nil || probe.p.HTTPGet == nil {
			continue
		}
		port := probe.p.HTTPGet.Port
		if port.Type == intstr.String && !portNames[port.StrVal] {
			errs = append(errs, field.NotFound(cp.Child(probe.name, "httpGet", "port"), port.StrVal))
		}
		errs = append(errs, checkPort(port, cp.Child(probe.name, "httpGet", "port"))...)
	}
	return errs
}

// secretHoldsKey reports whether a secret volume carries a private key: a key whose name says
// so (*key*) among the items mounted, or among the Secret's data when no items are listed.
func secretHoldsKey(v *corev1.SecretVolumeSource, secrets map[string]*corev1.Secret) bool {
	var keys []string
	if len(v.Items) > 0 {
		for _, it := range v.Items {
			keys = append(keys, it.Key)
		}
	} else if s := secrets[v.SecretName]; s != nil {
		for k := range s.Data {
			keys = append(keys, k)
		}
	} else {
		return true // unknown content: treat as secret
	}
	return slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(strings.ToLower(k), "key") })
}

// checkHardening is this project's policy for every container: what the restricted Pod
// Security Standard asks, plus a read-only root file system and resource requests.
func checkHardening(c *corev1.Container, podSC *corev1.PodSecurityContext, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	scp := p.Child("securityContext")
	isTrue := func(b *bool) bool { return b != nil && *b }
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errs = append(errs, field.Invalid(scp.Child("allowPrivilegeEscalation"), sc.AllowPrivilegeEscalation, "must be false"))
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		errs = append(errs, field.Invalid(scp.Child("readOnlyRootFilesystem"), sc.ReadOnlyRootFilesystem, "must be true"))
	}
	if isTrue(sc.Privileged) {
		errs = append(errs, field.Forbidden(scp.Child("privileged"), "must not be true"))
	}
	runAsNonRoot := podSC.RunAsNonRoot
	if sc.RunAsNonRoot != nil {
		runAsNonRoot = sc.RunAsNonRoot
	}
	if !isTrue(runAsNonRoot) {
		errs = append(errs, field.Invalid(scp.Child("runAsNonRoot"), runAsNonRoot, "must be true (here or in the pod's securityContext)"))
	}
	runAsUser := podSC.RunAsUser
	if sc.RunAsUser != nil {
		runAsUser = sc.RunAsUser
	}
	if runAsUser != nil && *runAsUser == 0 {
		errs = append(errs, field.Forbidden(scp.Child("runAsUser"), "must not be 0 (root)"))
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		errs = append(errs, field.Required(scp.Child("capabilities", "drop"), `must contain "ALL"`))
	}
	if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
		errs = append(errs, field.Forbidden(scp.Child("capabilities", "add"), "no capabilities may be added"))
	}
	seccomp := podSC.SeccompProfile
	if sc.SeccompProfile != nil {
		seccomp = sc.SeccompProfile
	}
	if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
		errs = append(errs, field.Required(scp.Child("seccompProfile", "type"), "must be RuntimeDefault or Localhost (here or in the pod's securityContext)"))
	}
	rp := p.Child("resources")
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		errs = append(errs, field.Required(rp.Child("requests"), "cpu and memory requests are needed"))
	}
	if c.Resources.Limits.Memory().IsZero() {
		errs = append(errs, field.Required(rp.Child("limits", "memory"), "a memory limit is needed"))
	}
	return errs
}

// Container returns the container named name in the first Deployment that has one.
func (m *Manifest) Container(name string) *corev1.Container {
	for _, d := range m.Deployments {
		for i := range d.Spec.Template.Spec.Containers {
			if c := &d.Spec.Template.Spec.Containers[i]; c.Name == name {
				return c
			}
		}
	}
	return nil
}
