{{/* Labels on every object of the release. */}}
{{- define "leanmesh.labels" -}}
app.kubernetes.io/name: leanmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The controller pods: the Deployment's selector, the Services', the PDB's and the spread constraints'. */}}
{{- define "leanmesh.selectorLabels" -}}
app.kubernetes.io/name: leanmesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "leanmesh.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default .Release.Name }}
{{- end }}

{{/* The controller image: image.repository:image.tag, tag defaulting to the
     appVersion `make controller-image` tags (a chart test checks they agree). */}}
{{- define "leanmesh.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The RBAC features on in these values, each granting config/rbac/<feature>/role.yaml. */}}
{{- define "leanmesh.rbacFeatures" -}}
{{- $f := list "core" }}
{{- if .Values.leaderElection.enabled }}{{ $f = append $f "leader-election" }}{{ end }}
{{- if and .Values.metrics.enabled .Values.metrics.secure }}{{ $f = append $f "metrics-auth" }}{{ end }}
{{- if .Values.lazyXDS.enabled }}{{ $f = append $f "lazyxds" }}{{ end }}
{{- if .Values.workloadTable.enabled }}{{ $f = append $f "workload-table" }}{{ end }}
{{- join " " $f }}
{{- end }}
