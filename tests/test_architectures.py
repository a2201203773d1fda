"""The architecture conformance suite: every feature on a tiny random model of each
architecture researchers use (``zoo.ZOO``), against an independent reference written
with plain PyTorch forward hooks on the Hugging Face model (``hf_reference``), never
through TransformerLens. A feature that cannot be exact on an architecture must refuse it
by name, and the refusal is asserted here.

Tolerances: float32 throughout; activations and metrics agree to 2e-5 relative to their
scale (2e-4 for quantities read after ten or more additions, e.g. sums over positions in
attribution), rankings exactly.
"""

from __future__ import annotations

import pytest
import torch
from hf_reference import AXES, Analyses
from zoo import CAUSAL, ZOO, Zoo

from mi_cluster.collection.activations import Positions, collect_many
from mi_cluster.core.hooks import SITES
from mi_cluster.core.prompts import single_token_id, tokenize_prompt, word_positions
from mi_cluster.core.writes import NotAdditiveError

TEXTS = [
    "Adam went to the store. Lamp went to the",
    "When Mary and John went to the store, John gave a lamp to Mary",
]
CLEAN = [
    "When Mary and John went to the store, John gave a book to",
    "When Eve and Paul went to the store, Paul gave a cup to",
]
CORRUPT = [
    "When Mary and John went to the store, Adam gave a book to",
    "When Eve and Paul went to the store, Mark gave a cup to",
]
MODELS = list(ZOO)
POSITION_SITES = [k for k, (_, axes) in AXES.items() if "pos" in axes]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def close(got, want, rtol: float = 2e-5, msg: str = "") -> None:
    """Equal to ``rtol`` of the reference's scale (at least 1)."""
    got, want = (torch.as_tensor(t).detach().double() for t in (got, want))
    assert got.shape == want.shape, (msg, tuple(got.shape), tuple(want.shape))
    scale = float(want.abs().max().clamp_min(1.0))
    err = float((got - want).abs().max()) if got.numel() else 0.0
    assert err <= rtol * scale, f"{msg}: max difference {err:.3g} (scale {scale:.3g})"


def centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def uses_layernorm(model) -> bool:
    return (getattr(model.cfg, "normalization_type", "LN") or "LN").startswith("LN")


# ---------------------------------------------------------------------------------------
# Loading, tokenization, logits.


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("processing", ["transformer_lens", "hf"])
def test_logits_equal_hugging_face(zoo, name, processing):
    model, ref = zoo.bridge(name, processing), zoo.reference(name)
    tokens = model.to_tokens(TEXTS[0])
    with torch.no_grad():
        ours, theirs = model(tokens), ref.run(tokens).logits
    close(ours.log_softmax(-1), theirs.log_softmax(-1), msg="log-probabilities")
    if processing == "hf":  # no centring of the unembedding: the logits themselves
        close(ours, theirs, msg="logits")


@pytest.mark.parametrize("name", MODELS)
def test_prompts_tokenize_as_the_model_reads_them(zoo, name):
    """Word positions and the model's own tokens agree, whatever the tokenizer's BOS
    convention (a BOS the adapter does not prepend, an EOS the tokenizer appends)."""
    model = zoo.bridge(name)
    for text in TEXTS:
        tp = tokenize_prompt(model, text)
        assert list(tp.ids) == model.to_tokens(text)[0].tolist()
        (pos,) = word_positions(tp, "lamp", case_sensitive=False)
        assert tp.str_tokens[pos].strip().lower() == "lamp"


def test_a_tokenizer_with_a_bos_the_adapter_does_not_prepend(zoo, tmp_path):
    """Qwen 2's adapter prepends no BOS; given a tokenizer that defines one (and prepends
    it), prompts still align with the model's tokens (they were refused before)."""
    import shutil

    from tokenizers import processors
    from transformers import AutoTokenizer

    from mi_cluster.models.loading import load_model

    target = tmp_path / "qwen2-bos"
    shutil.copytree(zoo.directory("qwen2"), target)
    tok = AutoTokenizer.from_pretrained(str(target))
    tok.bos_token = "<|endoftext|>"
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    tok.save_pretrained(str(target))
    model = load_model(str(target), device="cpu")
    assert not model.cfg.default_prepend_bos and model.tokenizer("a")["input_ids"][0] == bos
    tp = tokenize_prompt(model, TEXTS[0])
    assert list(tp.ids) == model.to_tokens(TEXTS[0])[0].tolist() and tp.ids[0] != bos
    assert tp.str_tokens[word_positions(tp, "Lamp")[0]] == " Lamp"


# ---------------------------------------------------------------------------------------
# Collection.


def _collect_reference(ref, model, site, acts, value_bias: bool = True):
    """The reference's value of ``site`` at every collected row, ``[layer, row, ...]``
    (``resid_post`` starts with the embedding, layer 0's input); ``value_bias=False``:
    heads' ``z`` without their value bias (TransformerLens folds it away)."""
    n = model.cfg.n_layers
    entries = [(site, layer) for layer in range(n)]
    if site == "resid_post":
        entries = [("resid_pre", 0)] + entries
    ref_sites = tuple({"result": "z"}.get(s, s) for s, _ in entries)
    with torch.no_grad():
        runs = [ref.run(model.to_tokens(text), capture=ref_sites) for text in TEXTS]
    out = []
    for s, layer in entries:
        rows = []
        for prompt, (pos,) in zip(acts.prompt_index, acts.positions, strict=True):
            value = runs[prompt].sites[{"result": "z"}.get(s, s)][layer][:, pos : pos + 1]
            if s in ("z", "result") and not value_bias:
                value = value - ref.value_bias(layer).to(value)
            if s == "result":
                value = ref.head_results(value, layer)
            rows.append(value[0, 0])
        out.append(torch.stack(rows))
    return torch.stack(out)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("where", ["word", "last"])
def test_collection_equals_hugging_face(zoo, name, where):
    """Every site at a word and at the last token, from padded batches: with
    ``processing="hf"`` exactly Hugging Face's activations; with the default
    (TransformerLens's) processing what writes into the residual stream differs only by
    its mean over d_model on LayerNorm models, and heads' ``z`` lack their value bias."""
    ref = zoo.reference(name)
    positions = Positions.word("lamp", case_sensitive=False) if where == "word" else "last"
    no_mid = name == "bert" or ref.layout.parallel  # refused (below)
    sites = [s for s in SITES if s != "resid_mid" or not no_mid]
    for processing in ("hf", "transformer_lens"):
        model = zoo.bridge(name, processing)
        acts = collect_many(model, TEXTS, sites, positions, batch_size=2, progress=False)
        for site in sites:
            want = _collect_reference(ref, model, site, acts[site], processing == "hf")
            got = acts[site].tensor
            writes = site.startswith(("resid", "attn_out", "mlp_out")) or site == "result"
            if processing != "hf" and writes and uses_layernorm(model):
                got, want = centred(got), centred(want)  # writing weights centred
            close(got, want, msg=f"{site} ({processing})")


def test_resid_mid_is_refused_where_there_is_none(zoo):
    """BERT normalises each sub-block's sum (its hook_resid_mid is the MLP LayerNorm's
    input); GPT-J and GPT-NeoX run attention and MLP side by side on one residual."""
    with pytest.raises(NotAdditiveError, match="BertForMaskedLM.*attn_out"):
        collect_many(zoo.bridge("bert"), TEXTS, ["resid_mid"], "last", progress=False)
    for name, arch in (("gptj", "GPTJForCausalLM"), ("gpt_neox", "GPTNeoXForCausalLM")):
        with pytest.raises(ValueError, match=f"{arch} has no resid_mid .*read one residual"):
            collect_many(zoo.bridge(name), TEXTS, ["resid_mid"], "last", progress=False)


@pytest.mark.parametrize("name", MODELS)
def test_per_head_results_add_up_to_the_attention_output(zoo, name):
    """In either processing, the heads' results (through the post-attention norm where a
    block has one) plus the output bias are what attention adds."""
    for processing in ("hf", "transformer_lens"):
        model = zoo.bridge(name, processing)
        if name == "bert":  # post-LayerNorm: the heads' shares of the dense output
            _bert_results_add_up(model)
            continue
        acts = collect_many(model, TEXTS, ["result", "attn_out"], "mean", progress=False)
        try:
            bias = model.b_O.detach()[:, None]
        except AttributeError:  # no output-projection bias
            bias = torch.zeros(model.cfg.n_layers, 1, model.cfg.d_model)
        close(acts["result"].tensor.sum(2) + bias, acts["attn_out"].tensor, msg=processing)


def _bert_results_add_up(model):
    from mi_cluster.collection.activations import collect

    res = collect(model, TEXTS, "result", "last", progress=False)
    for row, text in enumerate(TEXTS):
        with torch.no_grad():
            _, cache = model.run_with_cache(text)
        pos = res.positions[row][0]
        for layer in range(model.cfg.n_layers):
            dense = cache[f"blocks.{layer}.attn.o.hook_out"][0, pos]
            close(res.tensor[layer, row].sum(0) + model.b_O[layer].detach(), dense, msg="BERT")


# ---------------------------------------------------------------------------------------
# The logit lens and the tuned lens.


@pytest.mark.parametrize("name", MODELS)
def test_logit_lens_equals_the_models_own_head_on_each_layer(zoo, name):
    """Every layer read through the model's own head (final norm, unembedding, Gemma 2's
    soft-cap; BERT's MLM transform), the last equal to the model's output; a tuned lens
    whose translators are zero reads the same."""
    from mi_cluster.methods.lens.logit import logit_lens
    from mi_cluster.methods.lens.tuned import TunedLens

    model, ref = zoo.bridge(name), zoo.reference(name)
    lens = logit_lens(model, TEXTS, "last", keep_log_probs=True, progress=False)
    with torch.no_grad():
        for row, text in enumerate(TEXTS):
            tokens = model.to_tokens(text)
            run = ref.run(tokens, capture=("resid_pre", "resid_post"))
            pos = lens.positions[row]
            hidden = [run.sites["resid_pre"][0]] + run.sites["resid_post"]
            want = torch.stack([ref.readout(h[:, pos])[0] for h in hidden]).log_softmax(-1)
            close(lens.log_probs[:, row], want, msg="lens log-probabilities")
            close(lens.log_probs[-1, row], run.logits[0, pos].log_softmax(-1), msg="last")
    n, d = model.cfg.n_layers, model.cfg.d_model
    identity = TunedLens(lens.model_name, torch.zeros(n, d, d), torch.zeros(n, d))
    tuned = logit_lens(model, TEXTS, "last", lens=identity, keep_log_probs=True, progress=False)
    close(tuned.log_probs, lens.log_probs, msg="tuned lens at identity")
    assert torch.equal(tuned.top_ids, lens.top_ids)


# ---------------------------------------------------------------------------------------
# Patching: activation, path and attribution.


def _pair(model):
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    assert clean.shape == corrupted.shape
    return clean, corrupted


def _metrics(model):
    """The same logit difference at the last token, for mi_cluster and for the reference."""
    from mi_cluster.methods.patching import Metric

    a, b = single_token_id(model, "Mary"), single_token_id(model, "John")

    def ours(inp):
        return inp.logits[:, 0, a] - inp.logits[:, 0, b]

    def theirs(logits):
        return (logits[:, -1, a] - logits[:, -1, b]).double()

    return Metric("Mary - John", ours, "last"), theirs


# Attention patterns that TransformerLens's bridge reads only after the Hugging Face module
# has used them (generic delegated attention): a patched pattern would change nothing.
PATTERN_REFUSED = {"gptj", "opt", "bert"}


def _refused_sites(name: str, ref) -> dict[str, str]:
    """Site kinds refused on a model, with the words the refusal must contain."""
    refused = {}
    if name == "bert" or ref.layout.parallel:
        refused["resid_mid"] = "between attention and MLP"
    if name in PATTERN_REFUSED:
        refused["pattern"] = "patterns cannot be patched"
    return refused


@pytest.mark.parametrize("name", MODELS)
def test_activation_patching_equals_hugging_face(zoo, name, run_starts):
    """Every site kind, denoising and noising, against the same patch made with plain
    hooks on the Hugging Face model (grouped key/value heads patched as the model has
    them); resid_mid refused where there is none. Position-specific sites, denoising, run
    one site per pass, so in a causal model each patched run starts at its site's own position
    (earlier positions' keys and values read from the unpatched run, rotary embeddings
    at the true positions, sliding windows and masks cut as the model built them), while
    the reference recomputes every position; BERT's runs all start at 0."""
    from mi_cluster.methods.patching import PatchingError, activation_patching

    model, ref = zoo.bridge(name), zoo.reference(name)
    clean, corrupted = _pair(model)
    metric, theirs = _metrics(model)
    analyses = Analyses(ref)
    refused = _refused_sites(name, ref)
    for kind in [k for k in AXES if k not in refused]:
        for direction in ("denoise", "noise"):
            one_site = kind in POSITION_SITES and direction == "denoise"
            rows = len(clean) if one_site else None
            run_starts.clear()
            got = activation_patching(
                model, clean, corrupted, metric, kind, direction=direction,
                max_batch_size=rows, progress=False,
            )  # fmt: skip
            want = analyses.sweep(clean, corrupted, kind, direction, theirs)
            close(got.values, want, msg=f"{kind} {direction}")
            if one_site:
                starts = sorted(set(run_starts))
                expected = [0] if name == "bert" else list(range(clean.shape[1]))
                assert starts == expected, (kind, direction, starts)
    for kind, words in refused.items():
        with pytest.raises(PatchingError, match=words):
            activation_patching(model, clean, corrupted, metric, kind, progress=False)


@pytest.mark.parametrize("name", MODELS)
def test_path_patching_equals_hugging_face(zoo, name):
    """Every head as a sender, to the logits (final norm recomputed and frozen) and to
    receivers' queries, keys and values (key/value heads where they are grouped); BERT's
    masked-LM head has no final norm to freeze, which is refused."""
    from mi_cluster.methods.patching import PatchingError, path_patching

    model, ref = zoo.bridge(name), zoo.reference(name)
    clean, corrupted = _pair(model)
    metric, theirs = _metrics(model)
    analyses, last = Analyses(ref), model.cfg.n_layers - 1
    for frozen in (False, True):
        final_ln = "frozen" if frozen else "recompute"
        if frozen and name == "bert":
            with pytest.raises(PatchingError, match="frozen final norm needs a model"):
                path_patching(model, clean, corrupted, metric, final_ln=final_ln, progress=False)
            continue
        got = path_patching(model, clean, corrupted, metric, final_ln=final_ln, progress=False)
        close(got.values, analyses.path_to(clean, corrupted, theirs, frozen=frozen), msg="logits")
    receivers = [(last, 0, "q"), (last, min(1, ref.n_kv - 1), "k"), (last, ref.n_kv - 1, "v")]
    got = path_patching(model, clean, corrupted, metric, receivers, progress=False)
    close(got.values, analyses.path_to(clean, corrupted, theirs, receivers), msg="to q/k/v")


@pytest.mark.parametrize("name", MODELS)
def test_attribution_patching_equals_autograd_on_hugging_face(zoo, name):
    from mi_cluster.methods.patching import ATTRIBUTION_SITES, attribution_patching

    model, ref = zoo.bridge(name), zoo.reference(name)
    clean, corrupted = _pair(model)
    metric, theirs = _metrics(model)
    refused = _refused_sites(name, ref)
    sites = [s for s in ATTRIBUTION_SITES if s not in refused]
    got = attribution_patching(model, clean, corrupted, metric, sites)
    for site in sites:
        want = Analyses(ref).attribution(clean, corrupted, site, theirs)
        close(got[site].values, want, rtol=2e-4, msg=site)


# ---------------------------------------------------------------------------------------
# Heads: direct logit attribution, copy scores, attention, head-role claims.

NAMES = ("Mary", "John", "Eve", "Paul", "Adam", "Mark", "Emily", "Chris")
IOI = [  # (IO, S, replacement for S2)
    ("Mary", "John", "Adam"),
    ("Eve", "Paul", "Mark"),
    ("Emily", "Chris", "Sarah"),
    ("Diana", "Adam", "Paul"),
]


def _ioi(s2: bool = False):
    from mi_cluster.core.ioi_prompts import IOIPrompt

    text = "When {} and {} went to the store, {} gave a book to"
    return [IOIPrompt(text.format(io, s, r if s2 else s), io, s) for io, s, r in IOI]


def _ids(model, names) -> torch.Tensor:
    return torch.tensor([single_token_id(model, n) for n in names])


@pytest.mark.parametrize("name", MODELS)
def test_direct_logit_attribution_equals_hugging_face(zoo, name):
    """Each head's write at END (through Gemma 2/3's and OLMo 2's post-attention norm at
    the attention output's scale) through the final norm frozen at the run's scale, on
    logit(IO) - logit(S); refused for post-LayerNorm BERT."""
    from mi_cluster.studies.ioi.heads import head_direct_logit_attribution

    model, ref = zoo.bridge(name), zoo.reference(name)
    prompts = _ioi()
    if name == "bert":
        with pytest.raises(NotAdditiveError, match="BertForMaskedLM"):
            head_direct_logit_attribution(model, prompts)
        return
    tokens = model.to_tokens([p.text for p in prompts])
    end = torch.full((len(prompts),), tokens.shape[1] - 1)
    io, s = _ids(model, [p.io for p in prompts]), _ids(model, [p.s for p in prompts])
    for processing in ("hf", "transformer_lens"):  # the latter folds value biases away
        got = head_direct_logit_attribution(zoo.bridge(name, processing), prompts)
        want = Analyses(ref).dla(tokens, end, io, s, value_bias=processing == "hf")
        close(got, want, msg=f"DLA ({processing})")


def _paper_vectors(ref, model, prompts):
    """Layer 0's output at IO then S1 in each prompt, and the names' ids."""
    tokens = model.to_tokens([p.text for p in prompts])
    io, s = _ids(model, [p.io for p in prompts]), _ids(model, [p.s for p in prompts])
    with torch.no_grad():
        out = ref.run(tokens, capture=("resid_post",)).sites["resid_post"][0]
    rows = torch.arange(len(prompts))
    at_io = (tokens == io[:, None]).int().argmax(1)
    at_s1 = (tokens == s[:, None]).int().argmax(1)  # the first mention
    return torch.cat([out[rows, at_io], out[rows, at_s1]]), torch.cat([io, s])


@pytest.mark.parametrize("name", MODELS)
def test_copy_scores_equal_hugging_face(zoo, name):
    """All three variants, positive and negative: the model's own norms (RMS or layer
    norm), grouped key/value heads expanded, post-attention norms applied."""
    from mi_cluster.studies.ioi.heads import copy_hits

    model, ref = zoo.bridge(name), zoo.reference(name)
    if name == "bert":
        with pytest.raises(NotAdditiveError, match="BertForMaskedLM"):
            copy_hits(model, NAMES)
        return
    ids = _ids(model, NAMES)
    with torch.no_grad():
        embedded = ref.model.get_input_embeddings()(ids)
        arena = embedded + ref.mlp_write(0, embedded)
    paper, paper_ids = _paper_vectors(ref, model, _ioi())
    analyses = Analyses(ref)
    for variant, x, want_ids in (
        ("embedding", embedded, ids), ("arena", arena, ids), ("paper", paper, paper_ids)
    ):  # fmt: skip
        for negative in (False, True):
            got = copy_hits(model, NAMES, k=3, negative=negative, variant=variant, prompts=_ioi())
            want = analyses.copy_hits(x, want_ids, 3, negative)
            assert torch.equal(got, want), (variant, negative)


@pytest.mark.parametrize("name", MODELS)
def test_attention_between_positions_equals_hugging_face(zoo, name):
    from mi_cluster.studies.ioi.heads import attention_between

    model, ref = zoo.bridge(name), zoo.reference(name)
    prompts = _ioi()
    tokens = model.to_tokens([p.text for p in prompts])
    with torch.no_grad():
        pattern = ref.run(tokens, capture=("pattern",)).sites["pattern"]
    io = (tokens == _ids(model, [p.io for p in prompts])[:, None]).int().argmax(1)
    end = tokens.shape[1] - 1  # the last token (BERT's [SEP])
    got = attention_between(model, prompts, "end", "io")
    rows = torch.arange(len(prompts))
    want = torch.stack([p[rows, :, end, io].T for p in pattern])  # [layer, head, prompt]
    close(got, want, msg="END -> IO")


def _ioi_metric(model, prompts, end: int = -1):
    """logit(IO) - logit(S) at ``end``, rows being copies of the prompts in turn."""
    io, s = _ids(model, [p.io for p in prompts]), _ids(model, [p.s for p in prompts])

    def metric(logits):
        rows = torch.arange(logits.shape[0]) % len(prompts)
        last = logits[:, end].double()
        return last[torch.arange(len(rows)), io[rows]] - last[torch.arange(len(rows)), s[rows]]

    return metric


@pytest.mark.parametrize("name", MODELS)
def test_head_claims_equal_hugging_face(zoo, name):
    """The effect of each head-role test, recomputed with plain hooks: mean ablation,
    attention END -> IO vs S1, copy score, and the direct effect (path patching with the
    final norm frozen; recomputed for BERT, whose head has no final norm and whose copy
    score is refused)."""
    from mi_cluster.studies.ioi.claims import (
        ablation_test,
        attention_test,
        copy_score_test,
        direct_effect_test,
    )

    model, ref = zoo.bridge(name), zoo.reference(name)
    prompts, last, bert = _ioi(), model.cfg.n_layers - 1, name == "bert"
    heads = [(last, 0), (last, 1)]
    tokens = model.to_tokens([p.text for p in prompts])
    end = tokens.shape[1] - 1  # the last token (BERT's [SEP], as patching reads "last")
    metric = _ioi_metric(model, prompts, end)
    with torch.no_grad():
        run = ref.run(tokens, capture=("z", "pattern"))
        mean_z = run.sites["z"][last].mean((0, 1))  # [head, d_head] over every token

        def ablate(z):
            z = z.clone()
            z[:, :, [h for _, h in heads]] = mean_z[[h for _, h in heads]]
            return z

        ablated = metric(ref.run(tokens, patches={("z", last): ablate}).logits)
    drop = float((metric(run.logits) - ablated).mean())
    claim = ablation_test(model, prompts, heads, n_random=20, pool="all")
    assert claim.effect == pytest.approx(drop, rel=2e-5, abs=2e-5)

    io = (tokens == _ids(model, [p.io for p in prompts])[:, None]).int().argmax(1)
    s1 = (tokens == _ids(model, [p.s for p in prompts])[:, None]).int().argmax(1)
    rows, pattern = torch.arange(len(prompts)), run.sites["pattern"][last]
    chosen = [h for _, h in heads]
    prefer = (pattern[rows, :, end, io] - pattern[rows, :, end, s1])[:, chosen].mean()
    claim = attention_test(model, prompts, heads, n_permutations=200)
    assert claim.effect == pytest.approx(float(prefer), abs=2e-6)

    if bert:
        with pytest.raises(NotAdditiveError, match="BertForMaskedLM"):
            copy_score_test(model, heads, NAMES, n_random=10)
    else:
        ids = _ids(model, NAMES)
        with torch.no_grad():
            hits = Analyses(ref).copy_hits(ref.model.get_input_embeddings()(ids), ids, 3, False)
        claim = copy_score_test(model, heads, NAMES, k=3, n_random=50)
        assert claim.effect == pytest.approx(float(hits[last, chosen].double().mean()))

    corrupted = _ioi(s2=True)
    c_tokens = model.to_tokens([p.text for p in corrupted])
    path = Analyses(ref).path_to(tokens, c_tokens, metric, frozen=not bert)  # [layer, head, p]
    effect = float(sum(metric(run.logits) - path[a, b] for a, b in heads).mean())
    final_ln = "recompute" if bert else "frozen"
    claim = direct_effect_test(model, prompts, corrupted, heads, n_random=50, final_ln=final_ln)
    assert claim.effect == pytest.approx(effect, rel=2e-5, abs=2e-5)


# Rotary models whose attention the bridge delegates to Hugging Face without exposing the
# rotated queries and keys: their neuron view is refused.
ROTARY_HIDDEN = {"gptj", "gpt_neox", "phi3"}


@pytest.mark.parametrize("name", MODELS)
def test_attention_views_equal_hugging_face(zoo, name):
    """Patterns of every layer, and the neuron view's queries and keys as the scores read
    them (rotated, normed, the key/value head of a group), whose softmax is the pattern,
    for a query past Gemma 2/3's and Mistral's sliding window."""
    from mi_cluster.methods.attention import attention_patterns, neuron_view

    model, ref = zoo.bridge(name, "hf"), zoo.reference(name)
    text = CLEAN[0]
    tokens = model.to_tokens(text)
    with torch.no_grad():
        run = ref.run(tokens, capture=("pattern", "rot_q", "rot_k"))
    views = attention_patterns(model, text)
    close(views.pattern, torch.stack([p[0] for p in run.sites["pattern"]]), msg="patterns")
    query, group = tokens.shape[1] - 2, ref.n_heads // ref.n_kv
    if name in ROTARY_HIDDEN:
        with pytest.raises(ValueError, match="hook_rot_q, which TransformerLens's bridge"):
            neuron_view(model, text, 0, 0, query)
        return
    for layer in range(model.cfg.n_layers):
        for head in (0, ref.n_heads - 1):
            view = neuron_view(model, text, layer, head, query)
            q = run.sites["rot_q"][layer][0, query, head]  # times the scaling
            k = run.sites["rot_k"][layer][0, :, head // group]
            close(view.product.sum(-1)[: query + 1] / view.scale, (k @ q)[: query + 1])
            close(view.k, k, msg="keys")
            close(view.scores.softmax(-1), run.sites["pattern"][layer][0, head, query])


@pytest.mark.parametrize("name", CAUSAL)
def test_ov_write_directions_span_what_each_head_writes(zoo, name):
    """The output side of a head's OV circuit (post-attention norm included where a block
    has one) spans the head's collected writes: nothing is left after projecting them on
    all its d_head directions."""
    from mi_cluster.methods.projections import head_circuit_directions

    model = zoo.bridge(name)
    acts = collect_many(model, TEXTS, ["result"], "all", progress=False)["result"].tensor
    d_head = model.cfg.d_head
    for layer in range(model.cfg.n_layers):
        for head in (0, model.cfg.n_heads - 1):
            basis = head_circuit_directions(model, layer, head, "OV", "output", k=d_head)
            writes = acts[layer, :, head].double()
            q, _ = torch.linalg.qr(basis.directions.double().T)  # orthonormal [d_model, d_head]
            left = writes - writes @ q @ q.T
            close(left, torch.zeros_like(left), rtol=1e-4, msg=f"L{layer}H{head}")


def test_an_output_head_it_cannot_reproduce_is_refused(zoo):
    """A model whose logits are not what mi_cluster's readout computes from its last
    residual (here: a GPT-2 told it soft-caps its logits, which it does not) is refused by
    the lens and by the patching runner, never read wrongly."""
    from mi_cluster.core.readout import ReadoutError
    from mi_cluster.methods.lens.logit import logit_lens
    from mi_cluster.methods.patching import PatchingError, activation_patching
    from mi_cluster.models.loading import load_model

    model = load_model(zoo.directory("gpt2"), device="cpu")
    model.cfg.output_logits_soft_cap = 5.0
    with pytest.raises(ReadoutError, match="GPT2LMHeadModel residuals as logits"):
        logit_lens(model, TEXTS, progress=False)
    metric, _ = _metrics(model)
    with pytest.raises(PatchingError, match="output head does not reproduce"):
        activation_patching(model, *_pair(model), metric, "head_out", progress=False)


@pytest.mark.parametrize("name", MODELS)
def test_resid_post_against_output_hidden_states(zoo, name):
    """What the site_hooks docstring says: entry i < n_layers is hidden_states[i],
    exactly with processing="hf", up to each vector's mean over d_model on LayerNorm
    models with the default processing."""
    from mi_cluster.collection.activations import collect

    ref = zoo.reference(name)
    for processing in ("hf", "transformer_lens"):
        model = zoo.bridge(name, processing)
        acts = collect(model, TEXTS[:1], "resid_post", "all", progress=False)
        tokens = model.to_tokens(TEXTS[0])
        with torch.no_grad():
            hidden = ref.model(tokens, output_hidden_states=True).hidden_states
        want = torch.stack([h[0] for h in hidden[: model.cfg.n_layers]])
        got = acts.tensor[: model.cfg.n_layers]
        if processing != "hf" and uses_layernorm(model) and name != "bert":  # BERT: no
            assert not torch.allclose(got, want, atol=1e-3)  # centring (post-LN): equal
            got, want = centred(got), centred(want)
        close(got, want, msg=processing)


def test_a_bidirectional_model_recomputes_every_position(zoo, run_starts):
    """BERT's positions read later ones: prefix reuse is refused by name and every patched
    run starts at position 0."""
    from mi_cluster.methods.patching import activation_patching
    from mi_cluster.methods.patching.activation import cached_runs
    from mi_cluster.methods.patching.inputs import prepare_pair

    model = zoo.bridge("bert")
    clean, corrupted = _pair(model)
    pair = prepare_pair(model, clean, corrupted, "equal")
    runs = cached_runs(model, pair, [], reuse_prefix="corrupted")
    assert runs.runner.prefix is None
    assert "bidirectional" in (runs.runner.prefix_refusal or "")
    metric, _ = _metrics(model)
    activation_patching(
        model, clean, corrupted, metric, "resid_pre", max_batch_size=2, progress=False
    )
    assert set(run_starts) == {0}
