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

{{/* GOMEMLIMIT in bytes: goMemLimitPercent of resources.limits.memory; empty
     when the percentage is 0 or there is no memory limit. A Kubernetes
     quantity in another form (decimals, exponents, milli) fails the render
     with the value named, rather than guessing. */}}
{{- define "leanmesh.goMemLimit" -}}
{{- $pct := int (.Values.goMemLimitPercent | default 0) }}
{{- $limit := "" }}
{{- with .Values.resources }}{{ with .limits }}{{ with .memory }}
{{- /* A bare number in a values file arrives as a float64 (3e+08 by toString). */}}
{{- $limit = kindIs "float64" . | ternary (printf "%d" (int64 .)) (toString .) }}
{{- end }}{{ end }}{{ end }}
{{- if and (gt $pct 0) $limit }}
{{- if not (regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $limit) }}
{{- fail (printf "resources.limits.memory %q: GOMEMLIMIT is derived from it (goMemLimitPercent=%d), which needs an integer with an optional Ki/Mi/Gi/Ti or k/M/G/T suffix (e.g. 256Mi); write it so, or set goMemLimitPercent: 0" $limit $pct) }}
{{- end }}
{{- $num := regexFind "^[0-9]+" $limit }}
{{- $unit := trimPrefix $num $limit }}
{{- $mult := get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000) $unit }}
{{- div (mul (int64 $num) (int64 $mult) $pct) 100 }}
{{- end }}
{{- end }}

{{/* "-<revision>" when an Istio revision is set (istiod's Service is istiod-<revision>). */}}
{{- define "leanmesh.revisionSuffix" -}}
{{- with .Values.revision }}-{{ . }}{{ end }}
{{- end }}
