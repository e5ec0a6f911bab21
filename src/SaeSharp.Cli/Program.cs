using SaeSharp;
using SaeSharp.Cli;

NativeRuntime.UsePassiveOpenMpWaits();
return Cli.Run(args);
