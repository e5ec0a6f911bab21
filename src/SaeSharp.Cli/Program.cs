using SaeSharp;
using SaeSharp.Cli;

NativeAllocator.KeepLargeBlocks();
return Cli.Run(args);
