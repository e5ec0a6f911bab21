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
    /// <paramref name="positions"/> (absolute, as <see cref="Interventions.Steering.Positions"/> counts them).</summary>
    public static List<(string Name, Func<Tensor, Tensor?> Fn)> Steering(CrossCoder cc, int latent, double scale, IReadOnlyList<(int Slot, string Hook)> slots,
        IReadOnlyCollection<long>? positions = null)
    {
        ArgumentNullException.ThrowIfNull(slots);
        SteeringVectors(cc, latent, scale).Dispose();   // the latent and scale checked now, not at the first hook
        CheckSlots(cc, slots);
        if (positions?.FirstOrDefault(p => p < 0) is long neg && neg < 0)
            throw new SaeSharpException($"steering position {neg} is negative: positions count from 0 at the first token");
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
    /// whole-sequence runs of exactly those tokens (not KV-cached generation). The edit owns its tensor until disposed.
    /// </summary>
    public static CrossCoderEdit EditLatents(CrossCoder cc, Tensor cleanInput, IReadOnlyList<(int Slot, string Hook)> slots,
        Func<Tensor, Tensor>? edit, bool useErrorTerm = true)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckReconstructsInput("crosscoder splice");
        if (edit is not null) cc.CheckSharedCodes("crosscoder ablation");
        ArgumentNullException.ThrowIfNull(cleanInput);
        CheckSlots(cc, slots);
        if (cleanInput.dim() != 4) throw new SaeSharpException($"crosscoder edit: the clean input has shape [{string.Join(", ", cleanInput.shape)}], expected [batch, pos, num_layers, activation_dim]");
        long b = cleanInput.shape[0], s = cleanInput.shape[1];
        Tensor write;   // D(f') − D(f) with the error term, else D(f')
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var x = cleanInput.reshape(b * s, cleanInput.shape[2], cleanInput.shape[3]).to(ScalarType.Float32, cc.Encoder.Weight.device);
            var f = cc.Encode(x);
            var recon = cc.Decode(edit is null ? f : edit(f));
            var w = !useErrorTerm ? recon : edit is null ? zeros_like(recon) : recon - cc.Decode(f);
            write = w.view(b, s, cc.Cfg.NumLayers, cc.Cfg.ActivationDim).MoveToOuterDisposeScope();
        }
        write = write.DetachFromDisposeScope();
        var hooks = slots.Select(sl => (sl.Hook, (Func<Tensor, Tensor?>)(y =>
        {
            if (y.shape[0] != b || y.shape[1] != s)
                throw new SaeSharpException($"crosscoder edit at '{sl.Hook}': the run has [{y.shape[0]}, {y.shape[1]}] tokens but the edit was made for [{b}, {s}]");
            using var scope = NewDisposeScope();
            var slot = write.select(2, sl.Slot).to(y.dtype, y.device).view(y.shape);
            return (useErrorTerm ? y.add(slot, TorchScalars.One) : slot.clone()).MoveToOuterDisposeScope();
        }))).ToList();
        return new CrossCoderEdit(hooks, write);
    }

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
    public static Tensor CleanInput(IReadOnlyList<CrossCoderModelRun> models, IReadOnlyList<string> slotHooks, IReadOnlyList<int> slotModels, Tensor tokens)
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
            var (logits, cache) = models[m].Model.Run(tokens.to(models[m].Model.Device), new RunOptions { CacheNames = names, Hooks = models[m].Hooks, StopAtLayer = null });
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
