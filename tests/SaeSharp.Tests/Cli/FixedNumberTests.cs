namespace SaeSharp.Tests.Cli;

/// <summary><c>Cli.Fixed</c>, the fixed-point cells of <c>sae ablate</c> and <c>sae clt-intervene</c>: a value that rounds
/// to zero has no minus sign (a KL of −3e-9 from float rounding is not "-0.0000"); every other value keeps its sign.</summary>
public class FixedNumberTests
{
    [Theory]
    [InlineData(-3e-9, 4, "0.0000")]
    [InlineData(-0.0, 4, "0.0000")]
    [InlineData(-0.00004999, 4, "0.0000")]
    [InlineData(-0.00005001, 4, "-0.0001")]
    [InlineData(-10.0, 4, "-10.0000")]
    [InlineData(-0.4, 0, "0")]
    [InlineData(-0.6, 0, "-1")]
    [InlineData(1.23456, 4, "1.2346")]
    [InlineData(0.0, 2, "0.00")]
    public void Fixed_drops_the_minus_sign_of_a_value_that_rounds_to_zero(double value, int decimals, string expected) =>
        Assert.Equal(expected, SaeSharp.Cli.Cli.Fixed(value, decimals));
}
