#!/usr/bin/env python3
"""Regenerates src/SaeSharp/Hub/pretrained_saes.json from SAELens's sae_lens/pretrained_saes.yaml.

Usage: scripts/update-pretrained-saes.py PRETRAINED_SAES_YAML COMMIT [REPO]
  e.g. git -C SAELens show HEAD:sae_lens/pretrained_saes.yaml > /tmp/p.yaml
       scripts/update-pretrained-saes.py /tmp/p.yaml $(git -C SAELens rev-parse HEAD) decoderesearch/SAELens > src/SaeSharp/Hub/pretrained_saes.json
  (the table at hand: SAELens 6.37.6, commit 69c4c62b0dc24e5ba23fc773a0286149514b4a23 of jbloomAus/SAELens, now
  decoderesearch/SAELens.)

Needs PyYAML. Keeps, per release: repo_id, model, conversion_func (which loader reads the files), config_overrides,
and per SAE: id, path, neuronpedia, l0, norm_scaling_factor, plus the TransformerLens hook, which the yaml does not hold: it is derived
here from the SAE id or path the way SAELens's config getters derive it (see docs/hub.md).
"""
import json
import re
import sys

import yaml

HOOK_PREFIX = re.compile(r"^(blocks\.\d+\.(?:attn\.|mlp\.)?hook_(?:resid_pre|resid_mid|resid_post|mlp_out|attn_out|z|q|k|v|pre|post))(?![a-z])")


def hook_of(release, info, sae):
    conv = info.get("conversion_func")
    sid, path = str(sae["id"]), str(sae.get("path", ""))
    m = HOOK_PREFIX.match(sid)
    if m:
        return m.group(1)
    if conv in ("gemma_2",):
        kind = re.search(r"gemma-scope-\d+b-(?:pt|it)-(res|mlp|att)", info["repo_id"])
        layer = re.search(r"layer_(\d+)", path)
        if path.startswith("embedding"):
            return "hook_embed"
        if kind and layer:
            return {"res": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out",
                    "att": "blocks.{}.attn.hook_z"}[kind.group(1)].format(layer.group(1))
    if conv in ("llama_scope", "llama_scope_r1_distill"):
        m = re.match(r"^l(\d+)([arm])", sid)
        if m:
            return {"a": "blocks.{}.hook_attn_out", "m": "blocks.{}.hook_mlp_out",
                    "r": "blocks.{}.hook_resid_post"}[m.group(2)].format(m.group(1))
    if conv == "gemma_3":
        # get_gemma_3_config_from_hf: the first layer_N of the path, the hook kind by substring in this order. A
        # transcoder's hooks (transcoder, clt) are given by SaeLensConversions.TranscoderHooks, not the table.
        layer = re.search(r"layer_(\d+)", path)
        if layer:
            for part, hook in (("resid_post", "blocks.{}.hook_resid_post"), ("attn_out", "blocks.{}.attn.hook_z"),
                               ("mlp_out", "blocks.{}.hook_mlp_out")):
                if part in path:
                    return hook.format(layer.group(1))
        return None
    if conv == "goodfire":
        # get_goodfire_config_from_hf's two fixed configs.
        return {"Goodfire/Llama-3.3-70B-Instruct-SAE-l50": "blocks.50.hook_resid_post",
                "Goodfire/Llama-3.1-8B-Instruct-SAE-l19": "blocks.19.hook_resid_post"}.get(info["repo_id"])
    if conv == "temporal":
        # get_temporal_sae_config_from_hf: blocks.{layer}.hook_resid_post, layer from the path, unless config_overrides says.
        if (info.get("config_overrides") or {}).get("hook_name"):
            return info["config_overrides"]["hook_name"]
        layer = re.search(r"layer_(\d+)", path)
        return "blocks.{}.hook_resid_post".format(layer.group(1)) if layer else None
    if conv == "dictionary_learning_1":
        m = re.search(r"resid_post_layer_(\d+)", path)
        if m:
            return "blocks.{}.hook_resid_post".format(m.group(1))
    return None


def main():
    src, commit = sys.argv[1], sys.argv[2]
    repo = sys.argv[3] if len(sys.argv) > 3 else "jbloomAus/SAELens"
    data = yaml.safe_load(open(src))
    releases = []
    for name in sorted(data):
        info = data[name]
        rel = {"release": name, "repo_id": info["repo_id"], "model": info["model"],
               "conversion": info.get("conversion_func")}
        if info.get("config_overrides"):
            rel["config_overrides"] = info["config_overrides"]
        saes = []
        for s in info.get("saes", []):
            e = {"id": str(s["id"]), "path": str(s["path"]), "hook": hook_of(name, info, s)}
            if s.get("neuronpedia"):
                e["neuronpedia"] = str(s["neuronpedia"])
            if s.get("l0") is not None:
                e["l0"] = s["l0"]
            if s.get("norm_scaling_factor") is not None:
                e["norm_scaling_factor"] = s["norm_scaling_factor"]
            saes.append(e)
        rel["saes"] = saes
        releases.append(rel)
    out = sys.stdout
    out.write("{\n")
    out.write('"source": ' + json.dumps(f"https://github.com/{repo}/blob/{commit}/sae_lens/pretrained_saes.yaml") + ",\n")
    out.write('"commit": ' + json.dumps(commit) + ",\n")
    out.write('"licence": "SAELens is MIT-licensed; this file restates the facts of its release table",\n')
    out.write('"releases": [\n')
    for i, rel in enumerate(releases):
        saes = rel.pop("saes")
        head = json.dumps(rel, ensure_ascii=False)[:-1]
        out.write(head + ', "saes": [\n')
        out.write(",\n".join("  " + json.dumps(s, ensure_ascii=False) for s in saes))
        out.write("\n]}" + ("," if i + 1 < len(releases) else "") + "\n")
    out.write("]\n}\n")


if __name__ == "__main__":
    main()
