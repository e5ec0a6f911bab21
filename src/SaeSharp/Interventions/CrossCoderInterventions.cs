using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>
/// Steering and latent edits with a crosscoder inside the model that fills some of its slots (several hooks of one model,
/// or one model of a model-diffing pair), as hook functions for <see cref="RunOptions.Hooks"/> or
/// <see cref="GenerationOptions.Hooks"/>. <c>slots</c> pairs each slot index j with the hook of this model it reads.
/// A latent's write to slot l is the difference it makes to the decoder: D_l(f + a·e_i) − D_l(f) = a·W_dec[l, i] (divided by
/// the slot's global scale when the checkpoint has an activation normaliser), so both edits are exact differences of
/// <see cref="CrossCoder.Decode"/>.
/// </summary>
public static class CrossCoderInterventions
{
    /// <summary>What latent <paramref name="latent"/> at raw activation <paramref name="scale"/> writes to each slot,
    /// Decode(scale·e_i) − Decode(0), [L, d] (caller disposes). The raw f, not the reported f·c of
    /// <see cref="CrossCoder.GetActivations"/>: a reported value v is f = v / c_i.</summary>
    public static Tensor SteeringVectors(CrossCoder cc, int latent, double scale)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckReconstructsInput("crosscoder steering");
        CheckLatent(cc, latent);
        if (!double.IsFinite(scale)) throw new SaeSharpException($"steering scale must be a finite number, got {scale}");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var f = zeros(2, cc.Cfg.DictSize, device: cc.Decoder.Weight.device);
        f[0, latent] = tensor((float)scale);
        var d = cc.Decode(f);
        return (d[0] - d[1]).MoveToOuterDisposeScope();
    }

    /// <summary>Steering (SAELens's x ← x + S·W_dec[F], per slot): at each hook of <paramref name="slots"/>, x ← x + the
    /// slot's row of <see cref="SteeringVectors"/>, at every position (prompt and generated tokens alike) or at
    /// <paramref name="positions"/> (as <see cref="Interventions.Steering.Positions"/> counts them: a negative one from the end
    /// of each row's prompt).</summary>
    public static List<(string Name, Func<Tensor, Tensor?> Fn)> Steering(CrossCoder cc, int latent, double scale, IReadOnlyList<(int Slot, string Hook)> slots,
        IReadOnlyCollection<long>? positions = null)
    {
        ArgumentNullException.ThrowIfNull(slots);
        SteeringVectors(cc, latent, scale).Dispose();   // the latent and scale checked now, not at the first hook
        CheckSlots(cc, slots);
        var at = positions?.ToArray();
        return slots.Select(s => (s.Hook, (Func<Tensor, Tensor?>)(x =>
        {
            using var scope = NewDisposeScope();
            // Made per call, in the scope: a tensor the hook kept would be left to the finalizer.
            var v = SteeringVectors(cc, latent, scale)[s.Slot].to(x.dtype, x.device);
            var delta = Interventions.Steering.AtPositions(v.view([.. Enumerable.Repeat(1L, (int)x.dim() - 1), -1]).expand(x.shape), at);
            return x.add(delta, TorchScalars.One).MoveToOuterDisposeScope();
        }))).ToList();
    }

    /// <summary>
    /// The crosscoder spliced into a model, with latent edits: f = encode(x) of the clean activations
    /// <paramref name="cleanInput"/> [batch, pos, L, d] (every slot, of every model), f' = <paramref name="edit"/>(f)
    /// [batch·pos, dict_size] (null: f' = f). With the error term (default, as the SAE path's clamp and ablation with
    /// <c>--error-term</c>) each hook of <paramref name="slots"/> becomes x_l + D_l(f') − D_l(f), which is
    /// x̂_l(f') + (x_l − x̂_l(f)); without it, D_l(f') = x̂_l(f'), the slot's reconstruction (<c>sae model run --sae CC</c>
    /// without <c>--error-term</c>, and <c>sae eval</c>'s splice). All slots are encoded from the clean run (a crosscoder's
    /// slots have no causal order), so a slot's hook gets its value whatever the model's earlier slots were given. For
    /// whole-sequence runs of exactly those tokens (<see cref="Generate"/> for KV-cached generation). The edit owns its
    /// tensor until disposed.
    /// </summary>
    public static CrossCoderEdit EditLatents(CrossCoder cc, Tensor cleanInput, IReadOnlyList<(int Slot, string Hook)> slots,
        Func<Tensor, Tensor>? edit, bool useErrorTerm = true)
    {
        CheckEdit(cc, slots, edit);
        var write = Write(cc, cleanInput, edit, useErrorTerm).DetachFromDisposeScope();
        return new CrossCoderEdit(EditHooks(slots, () => write, useErrorTerm), write);
    }

    /// <summary>
    /// Greedy or sampled continuation of <paramref name="tokens"/> by the model of slot <paramref name="slot"/> with
    /// <see cref="EditLatents"/>'s edit at every hook of that model's slots, KV-cached, equal at each step to the
    /// whole-sequence edit of the sequence so far. Each step, every model of <paramref name="models"/> that fills a slot
    /// runs clean on the step's tokens with its own KV cache (for a crosscoder over several hooks of one model, a second,
    /// clean run of the generating model), giving x_clean of every slot at the new positions; the generating model's own
    /// KV-cached run then writes D_l(f') − D_l(f) (or D_l(f') without the error term) at its slots' hooks, and the sampled
    /// token is fed to every run. Slot j is read at <paramref name="slotHooks"/>[j] of model
    /// <paramref name="slotModels"/>[j]. The generating model's <see cref="CrossCoderModelRun.Hooks"/> run first, then
    /// the edit, then <paramref name="options"/>' hooks (e.g. <see cref="Steering"/>). <paramref name="edit"/> sees f of
    /// the step's tokens only, so a mean ablation takes means computed beforehand (<see cref="LatentMeans"/>).
    /// </summary>
    public static GenerationResult Generate(CrossCoder cc, IReadOnlyList<CrossCoderModelRun> models, IReadOnlyList<string> slotHooks,
        IReadOnlyList<int> slotModels, int slot, Func<Tensor, Tensor>? edit, Tensor tokens, int maxNewTokens,
        GenerationOptions? options = null, bool useErrorTerm = true)
    {
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(slotHooks);
        ArgumentNullException.ThrowIfNull(slotModels);
        ArgumentNullException.ThrowIfNull(tokens);
        int l = cc.Cfg.NumLayers;
        if (slotHooks.Count != l || slotModels.Count != l)
            throw new SaeSharpException($"crosscoder generation: {slotHooks.Count} slot hooks and {slotModels.Count} slot models for a crosscoder with num_layers={l}");
        if (slot < 0 || slot >= l)
            throw new SaeSharpException($"slot {slot} is out of range for a crosscoder with num_layers={l} (0..{l - 1})");
        for (int j = 0; j < l; j++)
            if (slotModels[j] < 0 || slotModels[j] >= models.Count)
                throw new SaeSharpException($"crosscoder generation: slot {j} reads model {slotModels[j]}, but {models.Count} model{(models.Count == 1 ? " is" : "s are")} given " +
                                            "(a model-diffing crosscoder needs both models: the base model and the chat model)");
        int m = slotModels[slot];
        var slots = Enumerable.Range(0, l).Where(j => slotModels[j] == m).Select(j => (j, slotHooks[j])).ToList();
        CheckEdit(cc, slots, edit);
        var o = options ?? new GenerationOptions();
        var kvs = new KvCache?[models.Count];
        Tensor? write = null;
        try
        {
            void Step(Tensor input, Tensor mask, bool cached)
            {
                using var scope = NewDisposeScope();
                for (int k = 0; k < models.Count; k++)
                    if (cached && kvs[k] is null && slotModels.Contains(k)) kvs[k] = new KvCache(models[k].Model.Config.NLayers);
                var x = CleanInputStep(models, slotHooks, slotModels, input, mask, kvs);
                write?.Dispose();
                write = Write(cc, x, edit, useErrorTerm).DetachFromDisposeScope();
            }
            var hooks = new List<(string Name, Func<Tensor, Tensor?> Fn)>([.. models[m].Hooks ?? [], .. EditHooks(slots, () => write!, useErrorTerm), .. o.Hooks ?? []]);
            return Generation.Run(models[m].Model, tokens, maxNewTokens, o with { Hooks = hooks, BeforeStep = Step });
        }
        finally
        {
            write?.Dispose();
            foreach (var kv in kvs) kv?.Dispose();
        }
    }

    private static void CheckEdit(CrossCoder cc, IReadOnlyList<(int Slot, string Hook)> slots, Func<Tensor, Tensor>? edit)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckReconstructsInput("crosscoder splice");
        if (edit is not null) cc.CheckSharedCodes("crosscoder ablation");
        CheckSlots(cc, slots);
    }

    /// <summary>What the edit writes at every slot, [batch, pos, L, d]: D(f') − D(f) with the error term, else D(f'),
    /// f = encode(<paramref name="cleanInput"/>) [batch, pos, L, d].</summary>
    private static Tensor Write(CrossCoder cc, Tensor cleanInput, Func<Tensor, Tensor>? edit, bool useErrorTerm)
    {
        ArgumentNullException.ThrowIfNull(cleanInput);
        if (cleanInput.dim() != 4) throw new SaeSharpException($"crosscoder edit: the clean input has shape [{string.Join(", ", cleanInput.shape)}], expected [batch, pos, num_layers, activation_dim]");
        long b = cleanInput.shape[0], s = cleanInput.shape[1];
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x = cleanInput.reshape(b * s, cleanInput.shape[2], cleanInput.shape[3]).to(ScalarType.Float32, cc.Encoder.Weight.device);
        var f = cc.Encode(x);
        var recon = cc.Decode(edit is null ? f : edit(f));
        var w = !useErrorTerm ? recon : edit is null ? zeros_like(recon) : recon - cc.Decode(f);
        return w.view(b, s, cc.Cfg.NumLayers, cc.Cfg.ActivationDim).MoveToOuterDisposeScope();
    }

    /// <summary>Each slot's hook: y + the slot's write (with the error term), else the write, from <paramref name="write"/>()
    /// [batch, pos, L, d], which must match the run's tokens.</summary>
    private static List<(string Name, Func<Tensor, Tensor?> Fn)> EditHooks(IReadOnlyList<(int Slot, string Hook)> slots, Func<Tensor> write, bool useErrorTerm) =>
        slots.Select(sl => (sl.Hook, (Func<Tensor, Tensor?>)(y =>
        {
            var w = write();
            if (y.shape[0] != w.shape[0] || y.shape[1] != w.shape[1])
                throw new SaeSharpException($"crosscoder edit at '{sl.Hook}': the run has [{y.shape[0]}, {y.shape[1]}] tokens but the edit was made for [{w.shape[0]}, {w.shape[1]}]");
            using var scope = NewDisposeScope();
            var slotWrite = w.select(2, sl.Slot).to(y.dtype, y.device).view(y.shape);
            return (useErrorTerm ? y.add(slotWrite, TorchScalars.One) : slotWrite.clone()).MoveToOuterDisposeScope();
        }))).ToList();

    /// <summary>An edit for <see cref="EditLatents"/>: latent <paramref name="latent"/> set to <paramref name="value"/> (raw f).</summary>
    public static Func<Tensor, Tensor> Clamp(CrossCoder cc, int latent, double value)
    {
        CheckLatent(cc, latent);
        if (!double.IsFinite(value)) throw new SaeSharpException($"clamp value must be a finite number, got {value}");
        return f =>
        {
            using var v = value.ToScalar();
            return f.index_fill(-1, tensor(new long[] { latent }, device: f.device), v);
        };
    }

    /// <summary>An edit for <see cref="EditLatents"/>: the latents set to 0, or to <paramref name="means"/> [dict_size] (each
    /// latent's mean over the tokens).</summary>
    public static Func<Tensor, Tensor> Ablate(CrossCoder cc, IReadOnlyList<int> latents, Tensor? means = null)
    {
        ArgumentNullException.ThrowIfNull(latents);
        foreach (var l in latents) CheckLatent(cc, l);
        return f =>
        {
            var idx = tensor(latents.Select(l => (long)l).ToArray(), device: f.device);
            var fill = means is null ? zeros(f.shape[0], idx.shape[0], dtype: f.dtype, device: f.device)
                : means.to(f.dtype, f.device).index_select(0, idx).unsqueeze(0).expand(f.shape[0], -1);
            return f.index_copy(-1, idx, fill);
        };
    }

    /// <summary>The clean activations of every slot, [batch, pos, L, d]: each model run once on <paramref name="tokens"/>
    /// (with its hooks), slot j read at <paramref name="slotHooks"/>[j] of model <paramref name="slotModels"/>[j].</summary>
    public static Tensor CleanInput(IReadOnlyList<CrossCoderModelRun> models, IReadOnlyList<string> slotHooks, IReadOnlyList<int> slotModels, Tensor tokens) =>
        CleanInputStep(models, slotHooks, slotModels, tokens, null, null);

    /// <summary><see cref="CleanInput"/> with an attention mask, and model k continuing from its KV cache
    /// <paramref name="kvs"/>[k] when there is one (a step of <see cref="Generate"/>).</summary>
    internal static Tensor CleanInputStep(IReadOnlyList<CrossCoderModelRun> models, IReadOnlyList<string> slotHooks, IReadOnlyList<int> slotModels, Tensor tokens,
        Tensor? attentionMask, IReadOnlyList<KvCache?>? kvs)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(slotHooks);
        ArgumentNullException.ThrowIfNull(slotModels);
        ArgumentNullException.ThrowIfNull(tokens);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        long b = tokens.shape[0], s = tokens.shape[1];
        var parts = new Tensor[slotHooks.Count];
        for (int m = 0; m < models.Count; m++)
        {
            var names = slotHooks.Where((_, j) => slotModels[j] == m).ToList();
            if (names.Count == 0) continue;
            var (logits, cache) = models[m].Model.Run(tokens.to(models[m].Model.Device), new RunOptions
            {
                CacheNames = names, Hooks = models[m].Hooks, StopAtLayer = null, AttentionMask = attentionMask, KvCache = kvs?[m],
            });
            logits?.Dispose();
            using (cache)
                for (int j = 0; j < slotHooks.Count; j++)
                    if (slotModels[j] == m) parts[j] = cache![slotHooks[j]].reshape(b, s, -1).to(ScalarType.Float32).cpu();
        }
        return stack(parts, 2).MoveToOuterDisposeScope();
    }

    /// <summary>Each latent's mean raw activation f over every token of <paramref name="cleanInputs"/> (each [batch, pos, L, d])
    /// → [dict_size]. Each input is taken in its own dispose scope, so inputs made as they are enumerated (a lazy
    /// <c>Select</c> of <see cref="CleanInput"/>) are freed one by one.</summary>
    public static Tensor LatentMeans(CrossCoder cc, IEnumerable<Tensor> cleanInputs)
    {
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(cleanInputs);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var sum = zeros(cc.Cfg.DictSize, ScalarType.Float64);
        long n = 0;
        using var e = cleanInputs.GetEnumerator();
        while (true)
        {
            using var inner = NewDisposeScope();
            if (!e.MoveNext()) break;
            var x = e.Current.reshape(-1, e.Current.shape[2], e.Current.shape[3]).to(ScalarType.Float32, cc.Encoder.Weight.device);
            sum.add_(cc.Encode(x).to(ScalarType.Float64).sum([0]).cpu(), TorchScalars.One);
            n += x.shape[0];
        }
        if (n == 0) throw new SaeSharpException("crosscoder latent means: no tokens");
        using var count = ((double)n).ToScalar();
        return sum.div(count).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    private static void CheckLatent(CrossCoder cc, int latent)
    {
        if (latent < 0 || latent >= cc.Cfg.DictSize)
            throw new SaeSharpException($"latent {latent} is out of range for a crosscoder with dict_size={cc.Cfg.DictSize} (0..{cc.Cfg.DictSize - 1})");
    }

    private static void CheckSlots(CrossCoder cc, IReadOnlyList<(int Slot, string Hook)> slots)
    {
        ArgumentNullException.ThrowIfNull(slots);
        if (slots.Count == 0) throw new SaeSharpException("crosscoder intervention: no slot to act at");
        foreach (var (slot, _) in slots)
            if (slot < 0 || slot >= cc.Cfg.NumLayers)
                throw new SaeSharpException($"slot {slot} is out of range for a crosscoder with num_layers={cc.Cfg.NumLayers} (0..{cc.Cfg.NumLayers - 1})");
    }
}

/// <summary>The hooks of <see cref="CrossCoderInterventions.EditLatents"/> and what they write (D(f') − D(f), or D(f')), owned until disposed.</summary>
public sealed class CrossCoderEdit : IDisposable
{
    private readonly Tensor _delta;

    internal CrossCoderEdit(IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> hooks, Tensor delta)
    {
        Hooks = hooks;
        _delta = delta;
    }

    /// <summary>(hook, function) pairs for <see cref="RunOptions.Hooks"/>: one per slot of the model run.</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> Hooks { get; }

    /// <inheritdoc/>
    public void Dispose() => _delta.Dispose();
}
