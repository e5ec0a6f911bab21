namespace SaeSharp; internal static class Placeholder { }
