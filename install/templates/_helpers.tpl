{{/*
The chart renders the kustomize base itself (the YAML files of base/, read with .Files.Get), with the values applied: the two installs cannot drift apart. Its objects go into
the release's namespace instead of flexdisk-system.
*/}}

{{/* The objects of one base file, each moved into the release's namespace: a list of dicts. */}}
{{- define "flexdisk.base" -}}
{{- $root := index . 0 -}}
{{- $objects := list -}}
{{- range $doc := splitList "\n---\n" ($root.Files.Get (printf "base/%s" (index . 1))) -}}
{{- $o := fromYaml $doc -}}
{{- if $o -}}
{{- if hasKey $o.metadata "namespace" -}}
{{- $_ := set $o.metadata "namespace" $root.Release.Namespace -}}
{{- end -}}
{{- range (default list $o.subjects) -}}
{{- $_ := set . "namespace" $root.Release.Namespace -}}
{{- end -}}
{{- $objects = append $objects $o -}}
{{- end -}}
{{- end -}}
{{- toJson $objects -}}
{{- end -}}
