# An Elixir client of the pybroadway server, using only Elixir's standard library.
#
#   iex --sname client@localhost
#   iex> Node.connect(:server@localhost)
#   iex> c "examples/client.ex"
#   iex> ExamplesClient.start
#   iex> ExamplesClient.push_message("How are you?")
#
# In pull mode the server casts :request_message (or :pull_message, the library's last
# version); this client answers "I'm alive!".
defmodule ExamplesClient do
  use GenServer
  require Logger

  @receiver :off_broadway_otp_distribution_receiver
  @tries 10
  @wait 500

  def start, do: GenServer.start(__MODULE__, nil, name: __MODULE__)

  def push_message(data), do: GenServer.cast(__MODULE__, {:push_message, data})

  @impl true
  def init(nil) do
    receiver = lookup(@tries)
    :ok = GenServer.call(receiver, :register)
    Process.monitor(receiver)
    {:ok, %{receiver: receiver}}
  end

  defp lookup(tries) do
    :global.sync()

    case :global.whereis_name(@receiver) do
      pid when is_pid(pid) ->
        pid

      :undefined when tries > 1 ->
        Process.sleep(@wait)
        lookup(tries - 1)

      :undefined ->
        raise "Couldn't connect to #{@receiver}"
    end
  end

  @impl true
  def handle_cast({:push_message, data}, state) do
    GenServer.cast(state.receiver, {:push_message, data})
    {:noreply, state}
  end

  # A pull request, answered in its version's words. No log line here: requests come as fast
  # as the server's processors want them.
  def handle_cast(:request_message, state) do
    GenServer.cast(state.receiver, {:respond_to_pull_request, "I'm alive!"})
    {:noreply, state}
  end

  # The library's last version asks with :pull_message and is answered with :send_message.
  def handle_cast(:pull_message, state) do
    GenServer.cast(state.receiver, {:send_message, "I'm alive!"})
    {:noreply, state}
  end

  @impl true
  def handle_info({:DOWN, _ref, :process, _pid, reason}, state) do
    Logger.warning("receiver down: #{inspect(reason)}")
    {:stop, :normal, state}
  end

  def handle_info(_other, state), do: {:noreply, state}
end
