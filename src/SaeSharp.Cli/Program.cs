using SaeSharp;
using SaeSharp.Cli;

NativeRuntime.UsePassiveOpenMpWaits();
NativeRuntime.SerialTorchInKernelSteps();
return Cli.Run(args);
