using SaeSharp;
using SaeSharp.Cli;

NativeRuntime.Tune();
return Cli.Run(args);
