using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp;

/// <summary>
/// Modules the library hands to a caller who owns them (<see cref="Saes.SaeFactory.Create"/>, and through it every SAE
/// loader and the trainer's results; <see cref="Models.ModelLoader.FromPretrained"/>). TorchSharp registers every tensor
/// made while a <c>torch.NewDisposeScope()</c> is open on the thread in that scope, parameters included, so an SAE or a
/// model loaded inside a caller's scope would lose its weights when the scope ends ("Tensor invalid -- empty handle" on
/// the next call). Their parameters and buffers are therefore taken out of any scope: the module's own
/// <c>Dispose()</c> frees them.
/// </summary>
internal static class OwnedModules
{
    /// <summary>Detaches every parameter and buffer of <paramref name="module"/> (submodules included) from the dispose
    /// scope it was made in; returns the module.</summary>
    public static T Detach<T>(T module) where T : nn.Module
    {
        foreach (var p in module.parameters()) p.DetachFromDisposeScope();
        foreach (var b in module.buffers()) b.DetachFromDisposeScope();
        return module;
    }
}
