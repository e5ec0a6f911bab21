using SaeSharp;
using SaeSharp.Cli;

NativeRuntime.UsePassiveOpenMpWaits();
NativeRuntime.SerialTorchInKernelSteps();
NativeRuntime.EnsureSignalStack();
return Cli.Run(args);
