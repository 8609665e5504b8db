# Elixir twin of pybroadway_peer.erl: evaluates Elixir code sent as {packet,4} frames on the
# file descriptors named by `-pybroadway_fds In Out`.
defmodule PybroadwayPeer do
  def main do
    {:ok, [[fd_in, fd_out]]} = :init.get_argument(:pybroadway_fds)
    fds = {List.to_integer(fd_in), List.to_integer(fd_out)}
    port = Port.open({:fd, elem(fds, 0), elem(fds, 1)}, [:binary, {:packet, 4}, :eof])
    loop(port, [])
  end

  defp loop(port, binding) do
    receive do
      {^port, {:data, <<op, text::binary>>}} ->
        {reply, binding} = run(op, text, binding)
        Port.command(port, reply)
        loop(port, binding)

      {^port, :eof} ->
        System.halt(0)
    end
  end

  defp run(op, text, binding) do
    {value, binding} = Code.eval_string(text, binding)

    case op do
      ?e -> {[0 | :erlang.term_to_binary(value)], binding}
      ?r -> {[0 | value], binding}
    end
  rescue
    e -> {[1 | Exception.format(:error, e, __STACKTRACE__)], binding}
  catch
    kind, reason -> {[1 | Exception.format(kind, reason, __STACKTRACE__)], binding}
  end
end

PybroadwayPeer.main()
