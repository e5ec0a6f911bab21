using SaeSharp.Cli;

SaeSharp.NativeThreads.UsePassiveOpenMpWaits();
return Cli.Run(args);
