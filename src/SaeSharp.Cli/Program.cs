using SaeSharp.Cli;

return Cli.Run(args);
